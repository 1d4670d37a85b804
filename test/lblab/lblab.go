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
}

func New(t testing.TB) *Lab {
	tier.Require(t, tier.Root, tier.NetNS)
	id := fmt.Sprintf("%d", os.Getpid()%100000)
	l := &Lab{}
	for _, p := range []struct {
		ns   *netns.NS
		name string
	}{{&l.Client, "blbc"}, {&l.LB, "blbl"}, {&l.N1, "blb1"}, {&l.N2, "blb2"}} {
		ns, err := netns.Create(p.name + id)
		if err != nil {
			t.Fatal(err)
		}
		*p.ns = ns
		t.Cleanup(func() { ns.Delete() })
	}
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

func (l *Lab) NFT(t testing.TB) *nftables.Conn {
	f, err := os.Open(l.LB.Path())
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
func (l *Lab) Netlink(t testing.TB) *netlink.Handle {
	ns, err := vnetns.GetFromPath(l.LB.Path())
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
