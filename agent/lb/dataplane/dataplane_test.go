package dataplane_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/maglev"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/test/tier"
)

// lab is a client, an LB host and two nodes, each a network namespace this test creates: the client reaches the
// frontend range through the LB host, which forwards to the nodes on a bridge; the nodes route back through it
// (DNAT mode's return path). Nothing leaves the namespaces.
type lab struct {
	client, lb, n1, n2 netns.NS
}

func newLab(t *testing.T) *lab {
	tier.Require(t, tier.Root, tier.NetNS)
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &lab{}
	for _, p := range []struct {
		ns   *netns.NS
		name string
	}{{&l.client, "blbc"}, {&l.lb, "blbl"}, {&l.n1, "blb1"}, {&l.n2, "blb2"}} {
		ns, err := netns.Create(p.name + id)
		if err != nil {
			t.Fatal(err)
		}
		*p.ns = ns
		t.Cleanup(func() { ns.Delete() })
	}
	ip := func(args ...string) {
		t.Helper()
		if err := l.lb.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	ip("link", "add", "br0", "type", "bridge")
	ip("link", "set", "br0", "up")
	ip("addr", "add", "10.0.2.1/24", "dev", "br0")
	ip("link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", l.client.Name)
	ip("addr", "add", "10.0.1.1/24", "dev", "c0")
	ip("link", "set", "c0", "up")
	for i, n := range []netns.NS{l.n1, l.n2} {
		dev := fmt.Sprintf("n%d", i+1)
		ip("link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", n.Name)
		ip("link", "set", dev, "master", "br0")
		ip("link", "set", dev, "up")
		for _, args := range [][]string{{"link", "set", "lo", "up"}, {"link", "set", "eth0", "up"},
			{"addr", "add", fmt.Sprintf("10.0.2.%d/24", 11+i), "dev", "eth0"}, {"route", "add", "default", "via", "10.0.2.1"}} {
			if err := n.Run("ip", args...); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"link", "set", "eth0", "up"},
		{"addr", "add", "10.0.1.2/24", "dev", "eth0"}, {"route", "add", "203.0.113.0/24", "via", "10.0.1.1"}} {
		if err := l.client.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.lb.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs, in the node's namespace, a TCP server on port that writes the node's name on each connection and
// then echoes what it reads.
func serve(t *testing.T, n netns.NS, name string, port int) {
	ln, err := n.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				io.Copy(c, c)
			}()
		}
	}()
}

func conn(t *testing.T, l *lab) *nftables.Conn {
	f, err := os.Open(l.lb.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := dataplane.Open(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dial connects from the client to addr and returns the connection and the node that answered.
func dial(t *testing.T, l *lab, addr string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.client.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	name, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	return c, r, strings.TrimSpace(name)
}

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
	l := newLab(t)
	for _, n := range []struct {
		ns   netns.NS
		name string
	}{{l.n1, "node-1"}, {l.n2, "node-2"}} {
		serve(t, n.ns, n.name, 30080)
		serve(t, n.ns, n.name+"/other", 30081)
	}
	nft := conn(t, l)
	apply := func(fs ...dataplane.Frontend) {
		t.Helper()
		tab, err := dataplane.Build(fs, maglev.DefaultSize)
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
		c, _, name := dial(t, l, "203.0.113.1:80")
		c.Close()
		seen[name]++
	}
	if seen["node-1"] == 0 || seen["node-2"] == 0 || len(seen) != 2 {
		t.Errorf("30 connections reached %v; want both nodes", seen)
	}
	if c, _, name := dial(t, l, "203.0.113.1:8080"); !strings.HasSuffix(name, "/other") {
		t.Errorf("port 8080 reached %q, want the second nodePort", name)
	} else {
		c.Close()
	}

	// An established connection to node-2, then node-2 leaves the set.
	var kept net.Conn
	var keptR *bufio.Reader
	for kept == nil {
		c, r, name := dial(t, l, "203.0.113.1:80")
		if name == "node-2" {
			kept, keptR = c, r
		} else {
			c.Close()
		}
	}
	defer kept.Close()
	apply(dataplane.Frontend{IP: vip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: []dataplane.Backend{node1}})
	for range 10 {
		c, _, name := dial(t, l, "203.0.113.1:80")
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
	if c, err := l.client.DialContext(ctx, "tcp", "203.0.113.1:80"); err == nil {
		c.Close()
		t.Error("the frontend answered with its rule deleted")
	}
	cancel()
	apply(dataplane.Frontend{IP: vip, Protocol: dataplane.TCP, Port: 80, NodePort: 30080, Backends: both})
	c, _, _ := dial(t, l, "203.0.113.1:80")
	c.Close()
}

// Programming 10,000 frontends (one port each) over 3 nodes from scratch, into a fresh namespace's table: Build
// and Apply in one transaction. With Cluster policy all share one backend set: 10,000 + 251 map elements.
func BenchmarkApply10000(b *testing.B) {
	tier.Require(b, tier.Root, tier.NetNS)
	ns, err := netns.Create(fmt.Sprintf("blbb%d", os.Getpid()%100000))
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Delete()
	f, err := os.Open(ns.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	nft, err := dataplane.Open(int(f.Fd()))
	if err != nil {
		b.Fatal(err)
	}
	nodes := []dataplane.Backend{node1, node2, {Name: "node-3", IP: netip.MustParseAddr("10.0.2.13")}}
	var fs []dataplane.Frontend
	base := netip.MustParseAddr("10.64.0.0")
	for i := range 10000 {
		fs = append(fs, dataplane.Frontend{IP: base, Protocol: dataplane.TCP, Port: 80, NodePort: uint16(30000 + i%2768), Backends: nodes})
		base = base.Next()
	}
	for b.Loop() {
		tab, err := dataplane.Build(fs, maglev.DefaultSize)
		if err != nil {
			b.Fatal(err)
		}
		if err := dataplane.Apply(nft, tab, maglev.DefaultSize); err != nil {
			b.Fatal(err)
		}
	}
}
