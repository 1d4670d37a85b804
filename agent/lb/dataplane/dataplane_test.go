package dataplane_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/maglev"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/test/lblab"
)

var (
	vip   = netip.MustParseAddr("203.0.113.1")
	node1 = dataplane.Backend{Name: "node-1", IP: netip.MustParseAddr("10.0.2.11")}
	node2 = dataplane.Backend{Name: "node-2", IP: netip.MustParseAddr("10.0.2.12")}
)

// Real traffic through the table in a namespace: new flows spread over both nodes, each to the frontend's
// nodePort, the client's address kept; a second frontend port to its own nodePort; a node leaving the set takes no
// new flows while an established connection to it carries on; and a rule deleted by hand comes back with the next
// Apply.
func TestDNATThroughTheTable(t *testing.T) {
	l := lblab.New(t)
	for _, n := range []struct {
		ns   netns.NS
		name string
	}{{l.N1, "node-1"}, {l.N2, "node-2"}} {
		lblab.Serve(t, n.ns, n.name, 30080)
		lblab.Serve(t, n.ns, n.name+"/other", 30081)
	}
	nft := l.NFT(t)
	apply := func(fs ...dataplane.Frontend) {
		t.Helper()
		tab, err := dataplane.Build(fs, maglev.DefaultSize, dataplane.DNAT, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := dataplane.Apply(nft, tab, maglev.DefaultSize); err != nil {
			t.Fatal(err)
		}
	}
	both := []dataplane.Backend{node1, node2}
	apply(dataplane.Frontend{IP: vip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: both},
		dataplane.Frontend{IP: vip, Protocol: dataplane.TCP, Port: 8080, NodePort: 30081, Backends: both})

	seen := map[string]int{}
	for range 30 {
		c, _, name := l.Dial(t, "203.0.113.1:80")
		c.Close()
		seen[name]++
	}
	if seen["node-1"] == 0 || seen["node-2"] == 0 || len(seen) != 2 {
		t.Errorf("30 connections reached %v; want both nodes", seen)
	}
	if c, _, name := l.Dial(t, "203.0.113.1:8080"); !strings.HasSuffix(name, "/other") {
		t.Errorf("port 8080 reached %q, want the second nodePort", name)
	} else {
		c.Close()
	}

	// An established connection to node-2, then node-2 leaves the set.
	kept, keptR := l.DialTo(t, "203.0.113.1:80", "node-2")
	defer kept.Close()
	apply(dataplane.Frontend{IP: vip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: []dataplane.Backend{node1}})
	for range 10 {
		c, _, name := l.Dial(t, "203.0.113.1:80")
		c.Close()
		if name != "node-1" {
			t.Fatalf("a new connection reached %s after it left the set", name)
		}
	}
	fmt.Fprintf(kept, "still here\n")
	if line, err := keptR.ReadString('\n'); err != nil || line != "still here\n" {
		t.Errorf("the established connection to node-2: %q, %v", line, err)
	}

	// Drift: the rule deleted by hand; the next Apply (the periodic resync) brings it back.
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: dataplane.TableName}
	nft.FlushChain(&nftables.Chain{Table: table, Name: "prerouting"})
	if err := nft.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	if c, err := l.Client.DialContext(ctx, "tcp", "203.0.113.1:80"); err == nil {
		c.Close()
		t.Error("the frontend answered with its rule deleted")
	}
	cancel()
	apply(dataplane.Frontend{IP: vip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: both})
	c, _, _ := l.Dial(t, "203.0.113.1:80")
	c.Close()
}

// Programming 10,000 frontends (one port each) over 3 nodes from scratch, into a fresh namespace's table: Build
// and Apply in one transaction. With Cluster policy all share one backend set: 10,000 + 251 map elements.
func BenchmarkApply10000(b *testing.B) {
	nft := nftIn(b, "blbb")
	fs, _ := tenThousand()
	for b.Loop() {
		tab, err := dataplane.Build(fs, maglev.DefaultSize, dataplane.DNAT, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := dataplane.Apply(nft, tab, maglev.DefaultSize); err != nil {
			b.Fatal(err)
		}
	}
}

// loadBalancerSourceRanges: a frontend IP with ranges answers only clients inside them; another frontend IP
// without ranges answers everyone.
func TestSourceRanges(t *testing.T) {
	l := lblab.New(t)
	lblab.Serve(t, l.N1, "node-1", 30080)
	nft := l.NFT(t)
	other := netip.MustParseAddr("203.0.113.2")
	apply := func(ranges ...string) {
		t.Helper()
		var ps []netip.Prefix
		for _, r := range ranges {
			ps = append(ps, netip.MustParsePrefix(r))
		}
		tab, err := dataplane.Build([]dataplane.Frontend{
			{IP: vip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: []dataplane.Backend{node1}, SourceRanges: ps},
			{IP: other, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: []dataplane.Backend{node1}},
		}, maglev.DefaultSize, dataplane.DNAT, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := dataplane.Apply(nft, tab, maglev.DefaultSize); err != nil {
			t.Fatal(err)
		}
	}
	// A dropped SYN can only time out; one second is orders of magnitude above a round trip between namespaces.
	blocked := func(addr string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := l.Client.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	}
	apply("10.9.0.0/16", "192.0.2.0/24") // the client, 10.0.1.2, is outside
	if !blocked("203.0.113.1:80") {
		t.Error("a client outside the source ranges got through")
	}
	if c, _, _ := l.Dial(t, "203.0.113.2:80"); c != nil {
		c.Close()
	}
	apply("10.9.0.0/16", "10.0.0.0/16", "10.0.1.0/24") // overlapping ranges, merged
	if c, _, name := l.Dial(t, "203.0.113.1:80"); name != "node-1" {
		t.Errorf("a client inside the ranges reached %q", name)
	} else {
		c.Close()
	}
}

// Floating IP: the frontend IP stays the destination; the LB host routes each new flow to its node by a mark and
// the node accepts the frontend IP itself (here on its loopback, as kube-proxy accepts ipMode VIP) and answers the
// client through its default route. Flows spread over both nodes; an established flow stays on its node when the
// node leaves the backend set (its mark is in its conntrack entry, the node keeps its mark while known) and when
// another node is forgotten; a restarted host reads the same marks back from the kernel.
func TestFloatingIP(t *testing.T) {
	l := lblab.New(t)
	for _, n := range []struct {
		ns   netns.NS
		name string
	}{{l.N1, "node-1"}, {l.N2, "node-2"}} {
		if err := n.ns.Run("ip", "addr", "add", vip.String()+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
		lblab.Serve(t, n.ns, n.name, 80)
	}
	nft := l.NFT(t)
	h := l.Netlink(t)
	marks := dataplane.NewMarks()
	apply := func(known []dataplane.Backend, bs ...dataplane.Backend) {
		t.Helper()
		var addrs []netip.Addr
		for _, b := range known {
			addrs = append(addrs, b.IP)
		}
		if err := marks.Update(addrs); err != nil {
			t.Fatal(err)
		}
		tab, err := dataplane.Build([]dataplane.Frontend{{IP: vip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: bs}},
			maglev.DefaultSize, dataplane.FloatingIP, marks)
		if err != nil {
			t.Fatal(err)
		}
		if err := dataplane.Apply(nft, tab, maglev.DefaultSize); err != nil {
			t.Fatal(err)
		}
		if err := dataplane.ApplyRoutes(h, marks); err != nil {
			t.Fatal(err)
		}
	}
	both := []dataplane.Backend{node1, node2}
	apply(both, node1, node2)
	seen := map[string]int{}
	for range 30 {
		c, _, name := l.Dial(t, "203.0.113.1:80")
		c.Close()
		seen[name]++
	}
	if seen["node-1"] == 0 || seen["node-2"] == 0 {
		t.Errorf("30 connections reached %v; want both nodes", seen)
	}
	kept, keptR := l.DialTo(t, "203.0.113.1:80", "node-2")
	defer kept.Close()
	echo := func(when string) {
		t.Helper()
		fmt.Fprintf(kept, "still here\n")
		if line, err := keptR.ReadString('\n'); err != nil || line != "still here\n" {
			t.Fatalf("%s: the established connection to node-2: %q, %v", when, line, err)
		}
	}
	apply(both, node1) // node-2 out of the set (say, unhealthy), still known
	for range 10 {
		c, _, name := l.Dial(t, "203.0.113.1:80")
		c.Close()
		if name != "node-1" {
			t.Fatalf("a new connection reached %s after it left the set", name)
		}
	}
	echo("node-2 left the set")

	// A restarted host: the marks come back from the kernel, node-1 is forgotten, node-2 keeps its mark.
	read, err := dataplane.ReadMarks(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range both {
		want, _ := marks.Mark(n.IP)
		if got, ok := read.Mark(n.IP); !ok || got != want {
			t.Errorf("read back %s's mark as %#x (%v); want %#x", n.IP, got, ok, want)
		}
	}
	marks = read
	apply([]dataplane.Backend{node2}, node2)
	echo("node-1 forgotten")
	if out, _ := l.LB.Output("ip", "rule"); strings.Count(out, "lookup 45424") != 0 || strings.Count(out, "lookup 45425") != 1 {
		t.Errorf("rules after node-1 was forgotten:\n%s", out)
	}
	if out, _ := l.LB.Output("ip", "route", "show", "table", "45424"); strings.TrimSpace(out) != "" {
		t.Errorf("node-1's table after it was forgotten: %s", out)
	}

	// DNAT mode takes every rule and route away.
	if err := dataplane.ApplyRoutes(h, nil); err != nil {
		t.Fatal(err)
	}
	if out, _ := l.LB.Output("ip", "rule"); strings.Contains(out, "fwmark") {
		t.Errorf("rules after DNAT mode:\n%s", out)
	}
}

// UDP through the table in both modes: new flows (source ports) spread over both nodes, a flow's datagrams all go
// to one node, and when that node leaves the backend set its flow stays with it (conntrack holds the node: the
// mark in floating-IP mode, the DNAT binding in DNAT mode) while new flows go to the other node.
func TestUDP(t *testing.T) {
	for _, mode := range []dataplane.Mode{dataplane.FloatingIP, dataplane.DNAT} {
		t.Run(string(mode), func(t *testing.T) {
			l := lblab.New(t)
			for _, n := range []struct {
				ns   netns.NS
				name string
				b    dataplane.Backend
			}{{l.N1, "node-1", node1}, {l.N2, "node-2", node2}} {
				if mode == dataplane.DNAT {
					lblab.ServeUDP(t, n.ns, n.name, n.b.IP.String()+":30053")
					continue
				}
				if err := n.ns.Run("ip", "addr", "add", vip.String()+"/32", "dev", "lo"); err != nil {
					t.Fatal(err)
				}
				lblab.ServeUDP(t, n.ns, n.name, vip.String()+":53")
			}
			nft := l.NFT(t)
			h := l.Netlink(t)
			var marks *dataplane.Marks
			if mode == dataplane.FloatingIP {
				marks = dataplane.NewMarks()
				if err := marks.Update([]netip.Addr{node1.IP, node2.IP}); err != nil {
					t.Fatal(err)
				}
			}
			apply := func(bs ...dataplane.Backend) {
				t.Helper()
				tab, err := dataplane.Build([]dataplane.Frontend{{IP: vip, Protocol: dataplane.UDP, Port: 53, NodePort: 30053, Backends: bs}},
					maglev.DefaultSize, mode, marks)
				if err != nil {
					t.Fatal(err)
				}
				if err := dataplane.ApplyRoutes(h, marks); err != nil {
					t.Fatal(err)
				}
				if err := dataplane.Apply(nft, tab, maglev.DefaultSize); err != nil {
					t.Fatal(err)
				}
			}
			apply(node1, node2)
			seen := map[string]int{}
			var toNode2 *lblab.UDPFlow
			for i := range 30 {
				f := l.DialUDP(t, "203.0.113.1:53")
				name := f.Ask(t, fmt.Sprint("hello ", i))
				seen[name]++
				for j := range 3 {
					if again := f.Ask(t, fmt.Sprint("again ", j)); again != name {
						t.Fatalf("flow %d: its datagrams reached %s, then %s", i, name, again)
					}
				}
				if name == "node-2" && toNode2 == nil {
					toNode2 = f
				}
			}
			if seen["node-1"] == 0 || seen["node-2"] == 0 || len(seen) != 2 {
				t.Fatalf("30 UDP flows reached %v; want both nodes", seen)
			}
			apply(node1) // node-2 leaves the set
			for i := range 10 {
				if name := l.DialUDP(t, "203.0.113.1:53").Ask(t, fmt.Sprint("new ", i)); name != "node-1" {
					t.Fatalf("a new flow reached %s after it left the set", name)
				}
			}
			if name := toNode2.Ask(t, "still there"); name != "node-2" {
				t.Errorf("the established flow to node-2 moved to %s when node-2 left the set", name)
			}
		})
	}
}
