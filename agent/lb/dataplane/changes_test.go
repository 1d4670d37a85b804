package dataplane_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"testing"

	"github.com/google/nftables"

	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/maglev"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/test/lblab"
	"berth.dev/berth/test/tier"
)

// nftIn is an nftables connection in a namespace of its own.
func nftIn(tb testing.TB, prefix string) *nftables.Conn {
	tier.Require(tb, tier.Root, tier.NetNS)
	ns, err := netns.Create(fmt.Sprintf("%s%d", prefix, os.Getpid()%100000))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Delete() })
	f, err := os.Open(ns.Path())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	nft, err := dataplane.Open(int(f.Fd()))
	if err != nil {
		tb.Fatal(err)
	}
	return nft
}

// kernelElements reads a map or set of berth's table back from the kernel: key → value.
func kernelElements(t *testing.T, nft *nftables.Conn, name string) map[string]string {
	t.Helper()
	set, err := nft.GetSetByName(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: dataplane.TableName}, name)
	if err != nil {
		t.Fatalf("set %s: %v", name, err)
	}
	elems, err := nft.GetSetElements(set)
	if err != nil {
		t.Fatalf("elements of %s: %v", name, err)
	}
	out := map[string]string{}
	for _, e := range elems {
		out[string(e.Key)] = string(e.Val)
	}
	return out
}

func wantElements(es []nftables.SetElement) map[string]string {
	out := map[string]string{}
	for _, e := range es {
		out[string(e.Key)] = string(e.Val)
	}
	return out
}

// Incremental changes leave the kernel with exactly the elements of the table they change to: 40 random steps
// (frontends come and go, node sets change, Local sets appear, source ranges change), each applied with
// ApplyChanges and read back from the kernel; a step with no change sends nothing; a mode change is a full apply.
func TestApplyChangesMatchesTheTable(t *testing.T) {
	nft := nftIn(t, "blbd")
	nodes := []dataplane.Backend{node1, node2, {Name: "node-3", IP: netip.MustParseAddr("10.0.2.13")}, {Name: "node-4", IP: netip.MustParseAddr("10.0.2.14")}}
	rng := rand.New(rand.NewPCG(1, 2))
	random := func() []dataplane.Frontend {
		var fs []dataplane.Frontend
		for i := range 30 {
			if rng.IntN(3) == 0 {
				continue
			}
			var bs []dataplane.Backend
			for _, n := range nodes {
				if rng.IntN(4) > 0 {
					bs = append(bs, n)
				}
			}
			f := dataplane.Frontend{IP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), Protocol: dataplane.TCP, Port: 80, NodePort: uint16(30000 + rng.IntN(3)), Backends: bs}
			if rng.IntN(5) == 0 {
				f.SourceRanges = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), 0, 0}), 16)}
			}
			fs = append(fs, f)
		}
		return fs
	}
	build := func(fs []dataplane.Frontend) dataplane.Table {
		tab, err := dataplane.Build(fs, maglev.DefaultSize, dataplane.DNAT, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	prev := build(random())
	if err := dataplane.Apply(nft, prev, maglev.DefaultSize); err != nil {
		t.Fatal(err)
	}
	for step := range 40 {
		next := build(random())
		if step%10 == 9 {
			next = prev // no change
		}
		n, err := dataplane.ApplyChanges(nft, prev, next, maglev.DefaultSize)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if step%10 == 9 && n != 0 {
			t.Errorf("step %d: %d changes for an unchanged table", step, n)
		}
		for name, want := range map[string][]nftables.SetElement{"frontends": next.Frontends, "slots": next.Slots, "restricted": next.Restricted} {
			got, w := kernelElements(t, nft, name), wantElements(want)
			if len(got) != len(w) {
				t.Fatalf("step %d: %s has %d elements, want %d", step, name, len(got), len(w))
			}
			for k, v := range w {
				if got[k] != v {
					t.Fatalf("step %d: %s element %x = %x, want %x", step, name, k, got[k], v)
				}
			}
		}
		prev = next
	}
	marks := dataplane.NewMarks()
	var addrs []netip.Addr
	for _, n := range nodes {
		addrs = append(addrs, n.IP)
	}
	if err := marks.Update(addrs); err != nil {
		t.Fatal(err)
	}
	floating, err := dataplane.Build(random(), maglev.DefaultSize, dataplane.FloatingIP, marks)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := dataplane.ApplyChanges(nft, prev, floating, maglev.DefaultSize); err != nil || n != -1 {
		t.Errorf("a mode change: %d, %v; want a full apply (-1)", n, err)
	}
	if got := kernelElements(t, nft, "slots"); len(got) != len(floating.Slots) {
		t.Errorf("after the mode change slots has %d elements, want %d", len(got), len(floating.Slots))
	}
}

// One Service's change among 10,000 frontends: ApplyChanges sends what changed (a Local Service's node set: its
// frontend element and its Maglev table), where Apply rewrites everything (BenchmarkApply10000).
func BenchmarkApplyChanges10000(b *testing.B) {
	nft := nftIn(b, "blbe")
	fs, nodes := tenThousand()
	last := len(fs) - 1 // the last frontend, so that no other backend set's number moves
	tables := make([]dataplane.Table, 2)
	for i, bs := range [][]dataplane.Backend{nodes, nodes[:1]} {
		fs[last].Backends = bs
		tab, err := dataplane.Build(fs, maglev.DefaultSize, dataplane.DNAT, nil)
		if err != nil {
			b.Fatal(err)
		}
		tables[i] = tab
	}
	if err := dataplane.Apply(nft, tables[0], maglev.DefaultSize); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		if _, err := dataplane.ApplyChanges(nft, tables[i%2], tables[(i+1)%2], maglev.DefaultSize); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// Connection rate through the LB host with 10 and with 10,000 frontends in the table: each op is one TCP
// connection from the client through a frontend to a node's server, its greeting read, closed. The frontend used
// is the last of the table (the highest address), so a cost that grew with the table would show. The ratio of the
// two should be about 1: the rule does two map lookups, whatever the number of frontends.
func BenchmarkConnectionRate(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("frontends=%d", n), func(b *testing.B) {
			l := lblab.New(b)
			lblab.Serve(b, l.N1, "node-1", 30080)
			lblab.Serve(b, l.N2, "node-2", 30080)
			var fs []dataplane.Frontend
			ip := netip.MustParseAddr("203.0.0.0")
			for range n {
				ip = ip.Next()
				fs = append(fs, dataplane.Frontend{IP: ip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: []dataplane.Backend{node1, node2}})
			}
			if err := l.Client.Run("ip", "route", "replace", "203.0.0.0/16", "via", "10.0.1.1"); err != nil {
				b.Fatal(err)
			}
			tab, err := dataplane.Build(fs, maglev.DefaultSize, dataplane.DNAT, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := dataplane.Apply(l.NFT(b), tab, maglev.DefaultSize); err != nil {
				b.Fatal(err)
			}
			addr := ip.String() + ":80"
			for b.Loop() {
				c, _, _ := l.Dial(b, addr)
				c.Close()
			}
		})
	}
}

// tenThousand is 10,000 frontends (10.64.0.0 on, one port each) over the same 3 nodes, and the nodes.
func tenThousand() ([]dataplane.Frontend, []dataplane.Backend) {
	nodes := []dataplane.Backend{node1, node2, {Name: "node-3", IP: netip.MustParseAddr("10.0.2.13")}}
	var fs []dataplane.Frontend
	base := netip.MustParseAddr("10.64.0.0")
	for i := range 10000 {
		fs = append(fs, dataplane.Frontend{IP: base, Protocol: dataplane.TCP, Port: 80, NodePort: uint16(30000 + i%2768), Backends: nodes})
		base = base.Next()
	}
	return fs, nodes
}
