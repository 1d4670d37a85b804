package controlplane

import (
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"berth.dev/berth/test/netns"
	"berth.dev/berth/test/proc"
	"berth.dev/berth/test/tier"
)

// The control plane binds to an address on a bridge inside a network namespace the test made, as the local cloud
// does; every component runs inside it, and this process reaches the apiserver through a dialer that opens its
// sockets there (the host has no route into the namespace).
func TestControlPlaneInNetworkNamespace(t *testing.T) {
	tier.Require(t, tier.NetNS, tier.Kubernetes)
	ns, err := netns.Create(fmt.Sprintf("berth-cp-%d", os.Getpid()))
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Error(err)
		}
	})
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge"},
		{"addr", "add", "10.77.0.1/24", "dev", "br0"},
		{"link", "set", "br0", "up"},
	} {
		if err := ns.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	reg := proc.DefaultRegistry(nil)
	cp := ForTest(t, Config{NetNS: ns.Path(), BindAddress: netip.MustParseAddr("10.77.0.1"), Registry: &reg})
	if cp.Endpoint != "https://10.77.0.1:6443" {
		t.Errorf("endpoint = %s, want https://10.77.0.1:6443", cp.Endpoint)
	}
	ji, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	if ji.Endpoint != cp.Endpoint {
		t.Errorf("join info endpoint = %s, want %s", ji.Endpoint, cp.Endpoint)
	}

	var want syscall.Stat_t
	if err := syscall.Stat(ns.Path(), &want); err != nil {
		t.Fatal(err)
	}
	recs, _, err := reg.Records()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.Group != cp.Config().Dir {
			continue
		}
		n++
		var got syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", r.PID), &got); err != nil {
			t.Fatal(err)
		}
		if got.Ino != want.Ino {
			t.Errorf("%s (pid %d) runs outside the namespace", r.Name, r.PID)
		}
	}
	if n != len(Components) {
		t.Errorf("found %d components, want %d", n, len(Components))
	}
}
