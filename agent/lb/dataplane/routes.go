package dataplane

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// maxNodes bounds the routing tables and marks the floating-IP mode may use (RouteTableBase to +maxNodes-1).
const maxNodes = 4096

// Marks is the floating-IP mode's assignment of nodes to marks: node with index i has mark MarkBase+i and routing
// table RouteTableBase+i. A node keeps its index for as long as it is known, also while it is out of every backend
// set (unhealthy, draining), so that an established flow, whose mark its conntrack entry holds, keeps reaching
// its node. The kernel holds the assignment too (rule → table → route via the node), and ReadMarks takes it back
// from there, so a restarted host keeps every index.
type Marks struct {
	byAddr map[netip.Addr]uint32
}

// NewMarks is an empty assignment.
func NewMarks() *Marks { return &Marks{byAddr: map[netip.Addr]uint32{}} }

// ReadMarks is the assignment the kernel holds in h's namespace: each fwmark rule of berth's range whose mark and
// table agree, and its table's default route via a node.
func ReadMarks(h *netlink.Handle) (*Marks, error) {
	m := NewMarks()
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("dataplane: list rules: %w", err)
	}
	ruled := map[int]bool{}
	for _, r := range rules {
		if i, ok := berthTable(r.Table); ok && r.Mark == MarkBase+i && r.Priority == RulePriority {
			ruled[r.Table] = true
		}
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("dataplane: list routes: %w", err)
	}
	for _, r := range routes {
		i, ok := berthTable(r.Table)
		if !ok || !ruled[r.Table] || r.Gw == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Gw.To4()); ok {
			if _, dup := m.byAddr[a]; !dup {
				m.byAddr[a] = i
			}
		}
	}
	return m, nil
}

func berthTable(table int) (uint32, bool) {
	if table < RouteTableBase || table >= RouteTableBase+maxNodes {
		return 0, false
	}
	return uint32(table - RouteTableBase), true
}

// Update makes the known nodes the assigned ones: a node that is no longer known gives its index up, a new one
// takes the lowest free index.
func (m *Marks) Update(known []netip.Addr) error {
	keep := map[netip.Addr]bool{}
	for _, a := range known {
		keep[a] = true
	}
	used := map[uint32]bool{}
	for a, i := range m.byAddr {
		if keep[a] {
			used[i] = true
		} else {
			delete(m.byAddr, a)
		}
	}
	next := uint32(0)
	sorted := slices.Clone(known)
	slices.SortFunc(sorted, netip.Addr.Compare)
	for _, a := range slices.Compact(sorted) {
		if _, ok := m.byAddr[a]; ok {
			continue
		}
		for used[next] {
			next++
		}
		if next >= maxNodes {
			return fmt.Errorf("dataplane: more than %d nodes for the floating-IP mode", maxNodes)
		}
		m.byAddr[a], used[next] = next, true
	}
	return nil
}

// Clone is a copy of m that later Updates of m leave alone.
func (m *Marks) Clone() *Marks { return &Marks{byAddr: maps.Clone(m.byAddr)} }

// Equal reports whether m and o assign the same indexes to the same nodes (nil equals only nil).
func (m *Marks) Equal(o *Marks) bool {
	if m == nil || o == nil {
		return m == o
	}
	return maps.Equal(m.byAddr, o.byAddr)
}

// Mark is node a's packet mark.
func (m *Marks) Mark(a netip.Addr) (uint32, bool) {
	i, ok := m.byAddr[a]
	return MarkBase + i, ok
}

// ApplyRoutes makes the policy routing in h's namespace match m: for the node with index i, the rule "fwmark
// MarkBase+i lookup RouteTableBase+i" and in that table a default route via the node. Rules and routes of berth's
// range that m does not hold are removed, so it also repairs drift; a nil m (DNAT mode) removes them all. The nodes
// must be on a network the host is directly attached to.
func ApplyRoutes(h *netlink.Handle, m *Marks) error {
	want := map[int]netip.Addr{}
	if m != nil {
		for a, i := range m.byAddr {
			want[RouteTableBase+int(i)] = a
		}
	}
	var errs []error
	for table, a := range want {
		r := &netlink.Route{Table: table, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Gw: a.AsSlice()}
		if err := h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route table %d via %s: %w", table, a, err))
		}
	}
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("dataplane: list rules: %w", err)
	}
	have := map[int]bool{}
	for _, r := range rules {
		i, ok := berthTable(r.Table)
		if !ok {
			continue
		}
		if _, wanted := want[r.Table]; wanted && r.Mark == MarkBase+i && r.Priority == RulePriority && !have[r.Table] {
			have[r.Table] = true
			continue
		}
		if err := h.RuleDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete rule to table %d: %w", r.Table, err))
		}
	}
	for table := range want {
		if have[table] {
			continue
		}
		mask := uint32(0xffffffff)
		r := netlink.NewRule()
		r.Family, r.Table, r.Mark, r.Mask, r.Priority = unix.AF_INET, table, MarkBase+uint32(table-RouteTableBase), &mask, RulePriority
		if err := h.RuleAdd(r); err != nil {
			errs = append(errs, fmt.Errorf("rule to table %d: %w", table, err))
		}
	}
	routes, err := h.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("dataplane: list routes: %w", err)
	}
	for _, r := range routes {
		if _, ok := berthTable(r.Table); !ok {
			continue
		}
		if a, wanted := want[r.Table]; !wanted || (r.Dst != nil && r.Dst.String() != "0.0.0.0/0") || !r.Gw.Equal(a.AsSlice()) {
			if err := h.RouteDel(&r); err != nil {
				errs = append(errs, fmt.Errorf("delete route of table %d: %w", r.Table, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dataplane: routes: %w", err)
	}
	return nil
}
