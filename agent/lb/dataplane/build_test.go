package dataplane

import (
	"fmt"
	"net/netip"
	"testing"
)

// Frontends with the same healthy nodes share one backend set (one Maglev table); another node set gets its own;
// a frontend without a healthy node gets no element; IPv6 is refused.
func TestBuildSharesBackendSets(t *testing.T) {
	a := Backend{Name: "node-1", IP: netip.MustParseAddr("10.0.2.11")}
	b := Backend{Name: "node-2", IP: netip.MustParseAddr("10.0.2.12")}
	vip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	tab, err := Build([]Frontend{
		{IP: vip("203.0.113.1"), Protocol: TCP, Port: 80, NodePort: 30080, Backends: []Backend{a, b}},
		{IP: vip("203.0.113.2"), Protocol: UDP, Port: 53, NodePort: 30053, Backends: []Backend{b, a}}, // same set, other order
		{IP: vip("203.0.113.3"), Protocol: TCP, Port: 80, NodePort: 30081, Backends: []Backend{a}},    // Local: its own set
		{IP: vip("203.0.113.4"), Protocol: TCP, Port: 80, NodePort: 30082},                            // no healthy node
	}, 7, DNAT, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tab.Sets != 2 || len(tab.Slots) != 14 || len(tab.Frontends) != 3 {
		t.Errorf("%d sets, %d slot elements, %d frontend elements; want 2, 14 (2×7), 3", tab.Sets, len(tab.Slots), len(tab.Frontends))
	}
	if _, err := Build([]Frontend{{IP: vip("2001:db8::1"), Protocol: TCP, Port: 80, NodePort: 30080, Backends: []Backend{a}}}, 7, DNAT, nil); err == nil {
		t.Error("an IPv6 frontend was accepted")
	}
}

func TestMergeRanges(t *testing.T) {
	var ps []netip.Prefix
	for _, s := range []string{"10.0.1.0/24", "10.0.0.0/16", "10.2.0.0/24", "10.2.1.0/24", "192.0.2.7/32", "2001:db8::/32", "10.3.0.5/24"} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	var got []string
	for _, r := range mergeRanges(ps) {
		got = append(got, r[0].String()+"-"+r[1].String())
	}
	want := "[10.0.0.0-10.0.255.255 10.2.0.0-10.2.1.255 10.3.0.0-10.3.0.255 192.0.2.7-192.0.2.7]"
	if fmt.Sprint(got) != want {
		t.Errorf("merged %v, want %s", got, want)
	}
}

// A node keeps its mark while it is known; a forgotten node's index goes to the next new node, lowest first.
func TestMarksStayWithTheirNodes(t *testing.T) {
	a, b, c, d := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	m := NewMarks()
	mark := func(x netip.Addr) uint32 {
		t.Helper()
		v, ok := m.Mark(x)
		if !ok {
			t.Fatalf("%s has no mark", x)
		}
		return v - MarkBase
	}
	if err := m.Update([]netip.Addr{c, a, b, a}); err != nil {
		t.Fatal(err)
	}
	if mark(a) != 0 || mark(b) != 1 || mark(c) != 2 {
		t.Errorf("first marks %d %d %d; want 0 1 2 (sorted)", mark(a), mark(b), mark(c))
	}
	before := m.Clone()
	if err := m.Update([]netip.Addr{b, c, a}); err != nil || !m.Equal(before) {
		t.Errorf("the same nodes again changed the marks (err %v)", err)
	}
	if err := m.Update([]netip.Addr{d, c}); err != nil {
		t.Fatal(err)
	}
	if m.Equal(before) || before.Equal(nil) || !(*Marks)(nil).Equal(nil) {
		t.Error("Equal missed a change, or a nil")
	}
	if mark := func(x netip.Addr) uint32 { v, _ := before.Mark(x); return v - MarkBase }; mark(b) != 1 {
		t.Error("Update changed a Clone taken before it")
	}
	if mark(c) != 2 || mark(d) != 0 {
		t.Errorf("after a and b were forgotten: c %d, d %d; want 2 (kept), 0 (lowest free)", mark(c), mark(d))
	}
	if _, ok := m.Mark(a); ok {
		t.Error("a forgotten node kept its mark")
	}
	many := make([]netip.Addr, maxNodes+1)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
	}
	if err := m.Update(many); err == nil {
		t.Errorf("%d nodes were given marks; the range holds %d", len(many), maxNodes)
	}
}
