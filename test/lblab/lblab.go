// Package lblab is a load-balancer test network: a client, an LB host and two nodes, each a network namespace
// the test creates and removes, with TCP servers in the nodes that say which node answered.
package lblab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/arp"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/test/tier"
)

// Lab is a client, an LB host and two nodes, each a network namespace this test creates: the client reaches the
// frontend range through the LB host, which forwards to the nodes on a bridge; the nodes route back through it
// (DNAT mode's return path). Nothing leaves the namespaces.
type Lab struct {
	Client, LB, N1, N2 netns.NS
	// LB2 and Switch are NewHA's: the second LB host, and the namespace that holds the segment's bridge.
	LB2, Switch netns.NS
}

// HA addresses: everything on one segment, 10.0.3.0/24.
const (
	HAClient = "10.0.3.2"
	HALB1    = "10.0.3.3"
	HALB2    = "10.0.3.4"
	HANode1  = "10.0.3.11"
	HANode2  = "10.0.3.12"
)

// NewHA is a client, two LB hosts and two nodes on one layer-2 segment (a bridge in a namespace of its own), as
// hosts in one cloud network are: the client reaches the frontend range 203.0.113.0/24 on-link, so it asks by ARP
// for a frontend IP and sends to whichever LB host answers; the nodes answer clients directly (the floating-IP
// return path). Each LB host forwards, sends no ICMP redirects (it forwards out of the interface the packet came in
// on), and its interface is eth0. The nodes answer ARP only for their own addresses on eth0.
func NewHA(t testing.TB) *Lab {
	tier.Require(t, tier.Root, tier.NetNS)
	l := &Lab{}
	create(t, map[*netns.NS]string{&l.Switch: "bhas", &l.Client: "bhac", &l.LB: "bha1", &l.LB2: "bha2", &l.N1: "bhn1", &l.N2: "bhn2"})
	sw := func(args ...string) {
		t.Helper()
		if err := l.Switch.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	sw("link", "add", "br0", "type", "bridge")
	sw("link", "set", "br0", "up")
	for i, m := range []struct {
		ns   netns.NS
		addr string
	}{{l.Client, HAClient}, {l.LB, HALB1}, {l.LB2, HALB2}, {l.N1, HANode1}, {l.N2, HANode2}} {
		port := fmt.Sprintf("p%d", i)
		sw("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", m.ns.Name)
		sw("link", "set", port, "master", "br0")
		sw("link", "set", port, "up")
		cmds := [][]string{{"ip", "link", "set", "lo", "up"}, {"ip", "link", "set", "eth0", "up"},
			{"ip", "addr", "add", m.addr + "/24", "dev", "eth0"}}
		switch m.ns {
		case l.Client:
			cmds = append(cmds, []string{"ip", "route", "add", "203.0.113.0/24", "dev", "eth0"})
		case l.LB, l.LB2:
			cmds = append(cmds, []string{"sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.eth0.send_redirects=0"})
		case l.N1, l.N2:
			// A frontend IP a test puts on a node's loopback must not be answered for by ARP on its segment
			// (kube-proxy accepts it without an address; LVS-DR real servers set the same).
			cmds = append(cmds, []string{"sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"})
		}
		for _, c := range cmds {
			if err := m.ns.Run(c[0], c[1:]...); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l
}

func New(t testing.TB) *Lab {
	tier.Require(t, tier.Root, tier.NetNS)
	l := &Lab{}
	create(t, map[*netns.NS]string{&l.Client: "blbc", &l.LB: "blbl", &l.N1: "blb1", &l.N2: "blb2"})
	ip := func(args ...string) {
		t.Helper()
		if err := l.LB.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	ip("link", "add", "br0", "type", "bridge")
	ip("link", "set", "br0", "up")
	ip("addr", "add", "10.0.2.1/24", "dev", "br0")
	ip("link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", l.Client.Name)
	ip("addr", "add", "10.0.1.1/24", "dev", "c0")
	ip("link", "set", "c0", "up")
	for i, n := range []netns.NS{l.N1, l.N2} {
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
		if err := l.Client.Run("ip", args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.LB.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	return l
}

// create makes each namespace, named its prefix and this process's pid, removed at cleanup.
func create(t testing.TB, names map[*netns.NS]string) {
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	for p, name := range names {
		ns, err := netns.Create(name + id)
		if err != nil {
			t.Fatal(err)
		}
		*p = ns
		t.Cleanup(func() { ns.Delete() })
	}
}

// Serve runs, in the node's namespace, a TCP server on port that writes the node's name on each connection and
// then echoes what it reads.
func Serve(t testing.TB, n netns.NS, name string, port int) {
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

// ServeUDP runs, in the node's namespace, a UDP server on addr (bound to the address the replies must come from:
// the frontend IP in floating-IP mode, as a pod behind kube-proxy's conntrack answers) that answers each datagram
// with the node's name, a space and the datagram.
func ServeUDP(t testing.TB, n netns.NS, name, addr string) {
	var pc net.PacketConn
	err := netns.In(n.Path(), func() (err error) {
		pc, err = net.ListenPacket("udp4", addr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(name+" "), buf[:k]...), from)
		}
	}()
}

// UDPFlow is a UDP socket of the client's, connected to a frontend: one flow (one source port).
type UDPFlow struct{ c net.Conn }

// DialUDP opens a new UDP flow from the client to addr.
func (l *Lab) DialUDP(t testing.TB, addr string) *UDPFlow {
	t.Helper()
	c, err := l.Client.DialContext(context.Background(), "udp4", addr)
	if err != nil {
		t.Fatalf("udp %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &UDPFlow{c}
}

// Ask sends msg on the flow and returns the node that answered, retrying a lost datagram (each try waits up to
// 1 s for the answer; five tries).
func (f *UDPFlow) Ask(t testing.TB, msg string) string {
	t.Helper()
	buf := make([]byte, 1500)
	var err error
	for range 5 {
		if _, err = f.c.Write([]byte(msg)); err != nil {
			break
		}
		f.c.SetReadDeadline(time.Now().Add(time.Second))
		var k int
		if k, err = f.c.Read(buf); err == nil {
			name, echoed, _ := strings.Cut(string(buf[:k]), " ")
			if echoed != msg {
				t.Fatalf("udp %s: answer %q to %q", f.c.RemoteAddr(), buf[:k], msg)
			}
			return name
		}
	}
	t.Fatalf("udp %s from %s: no answer: %v", f.c.RemoteAddr(), f.c.LocalAddr(), err)
	return ""
}

// NFT is an nftables connection in the LB host's namespace.
func (l *Lab) NFT(t testing.TB) *nftables.Conn { return NFTIn(t, l.LB) }

// NFTIn is an nftables connection in ns.
func NFTIn(t testing.TB, ns netns.NS) *nftables.Conn {
	f, err := os.Open(ns.Path())
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

// Dial connects from the client to addr and returns the connection and the node that answered.
func (l *Lab) Dial(t testing.TB, addr string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.Client.DialContext(ctx, "tcp", addr)
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

// DialTo connects from the client to addr until node answers (new flows are spread by a hash of the source port):
// a connection to node.
func (l *Lab) DialTo(t testing.TB, addr, node string) (net.Conn, *bufio.Reader) {
	t.Helper()
	for range 200 {
		c, r, name := l.Dial(t, addr)
		if name == node {
			return c, r
		}
		c.Close()
	}
	t.Fatalf("200 connections to %s never reached %s", addr, node)
	return nil, nil
}

// Health is an HTTP /healthz endpoint in a node's namespace (as kube-proxy's, or a Service's healthCheckNodePort)
// whose answer the test sets.
type Health struct {
	mu   sync.Mutex
	code int
}

// Set makes /healthz answer code from now on.
func (h *Health) Set(code int) { h.mu.Lock(); h.code = code; h.mu.Unlock() }

// ServeHealth serves /healthz on port in the node's namespace, answering 200 until Set says otherwise.
func ServeHealth(t testing.TB, n netns.NS, port int) *Health {
	h := &Health{code: http.StatusOK}
	ln, err := n.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		code := h.code
		h.mu.Unlock()
		w.WriteHeader(code)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

// Netlink is a netlink handle in the LB host's namespace (routes and rules).
func (l *Lab) Netlink(t testing.TB) *netlink.Handle { return NetlinkIn(t, l.LB) }

// NetlinkIn is a netlink handle in n.
func NetlinkIn(t testing.TB, n netns.NS) *netlink.Handle {
	ns, err := vnetns.GetFromPath(n.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// ARP is an ARP client on the interface ifname in ns.
func ARP(t testing.TB, ns netns.NS, ifname string) *arp.Client {
	var c *arp.Client
	err := netns.In(ns.Path(), func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		t.Fatalf("arp on %s in %s: %v", ifname, ns.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
