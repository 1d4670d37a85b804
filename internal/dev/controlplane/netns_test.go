package controlplane_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/controlplane"
	cptest "berth.dev/berth/test/controlplane"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
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
	cp := cptest.ForTest(t, controlplane.Config{NetNS: ns.Path(), BindAddress: netip.MustParseAddr("10.77.0.1"), Registry: &reg})
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
	// The kubernetes Service leads to the advertised address, as pods (CoreDNS) reach the API through it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []string
	for {
		slices, err := cp.Client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=kubernetes"})
		got = nil
		if err == nil {
			for _, s := range slices.Items {
				for _, e := range s.Endpoints {
					for _, p := range s.Ports {
						got = append(got, fmt.Sprintf("%s:%d", strings.Join(e.Addresses, ","), *p.Port))
					}
				}
			}
		}
		if len(got) == 1 && got[0] == "10.77.0.1:6443" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the kubernetes Service's endpoints are %v (%v), want 10.77.0.1:6443", got, err)
		case <-time.After(500 * time.Millisecond):
		}
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
	if n != len(controlplane.Components) {
		t.Errorf("found %d components, want %d", n, len(controlplane.Components))
	}
}
