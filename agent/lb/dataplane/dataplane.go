// Package dataplane programs an LB host's share of the shared load balancer: berth's own nftables table (it never
// touches another component's), in which each frontend IP:port/protocol is sent to one healthy node. The node for a
// new flow is a stateless function of the flow: a hash of its source address and port picks a slot of the
// frontend's Maglev table (package maglev), so every LB host picks the same node for the same flow, and a change of
// the node set moves few flows. conntrack keeps established flows where they are.
//
// Two modes (Mode). DNAT rewrites the destination to nodeIP:nodePort (a nat chain sees a connection's first packet
// only). Floating IP keeps the frontend IP as the destination, as Azure's load balancer does: the slot holds the
// node's packet mark (Marks), kept in the flow's conntrack entry, and policy routing (ApplyRoutes: fwmark → a table
// whose default route is the node) forwards the packet to the node unchanged, where kube-proxy accepts the frontend
// IP. The node answers the client directly (its default route), so the LB host holds no state a flow needs: another
// host that takes the frontend over picks the same node by the same hash.
//
// The per-packet cost does not grow with the number of Services: one rule and two map lookups, whatever the
// number of frontends.
//
//	table ip berth-lb {
//	  map frontends { type ipv4_addr . inet_proto . inet_service : inet_service . mark }  # → nodePort . backend set
//	  map slots     { type mark . mark : ipv4_addr }     # backend set . slot → node (floating IP: → node's mark)
//	  chain source-ranges { type filter hook prerouting priority mangle - 10; ... }  # loadBalancerSourceRanges
//	  chain prerouting {  # DNAT mode
//	    type nat hook prerouting priority dstnat; policy accept;
//	    dnat ip to (ip daddr . meta l4proto . th dport map @frontends) → set, slot = jhash(ip saddr . th sport) mod M
//	  }
//	  chain prerouting {  # floating-IP mode
//	    type filter hook prerouting priority mangle; policy accept;
//	    ct direction original ct mark and 0xffff0000 == MarkBase meta mark set ct mark accept
//	    meta mark set (the slot's mark) ct mark set meta mark
//	  }
//	}
//
// Frontends with the same set of healthy nodes share one backend set (and one Maglev table), so a cluster's
// Services with externalTrafficPolicy Cluster, which all go to every healthy node, cost one table of M slots
// together, not one each.
package dataplane

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"berth.dev/berth/agent/lb/maglev"
)

// TableName is berth's nftables table (family ip).
const TableName = "berth-lb"

// Mode is how a frontend's packets reach the chosen node.
type Mode string

const (
	// FloatingIP keeps the frontend IP as the destination and routes the packet to the node (policy routing by a
	// mark), as Azure's load balancer does by default: kube-proxy on the node accepts the frontend IP (ipMode VIP).
	// The LB host keeps no NAT state, so another host can take a flow over: the node's conntrack holds it.
	FloatingIP Mode = "floatingIP"
	// DNAT rewrites the destination to the node's nodeIP:nodePort. The nodes must route replies to clients back
	// through the LB host, whose conntrack undoes the NAT; a flow does not survive the move to another LB host.
	DNAT Mode = "dnat"
)

// MarkBase is the first packet mark of the floating-IP mode (node i's packets carry MarkBase+i), and
// RouteTableBase the first routing table (node i's is RouteTableBase+i). They stay clear of kube-proxy's mark bits
// (0x4000, 0x8000) and the system's tables.
const (
	MarkBase       = 0x0b170000
	RouteTableBase = 0xb170
	// RulePriority is the priority of the fwmark rules (before the main table's 32766).
	RulePriority = 1170
)

// Frontend is one frontend IP:port/protocol and the healthy nodes its new flows go to.
type Frontend struct {
	IP       netip.Addr
	Protocol Protocol
	Port     uint16
	// NodePort is where the Service listens on every node (DNAT mode sends there).
	NodePort uint16
	Backends []Backend
	// SourceRanges are the client networks allowed to reach the frontend IP (loadBalancerSourceRanges, the
	// network security group of a cloud); empty: every client. They apply to the frontend IP, all its ports.
	SourceRanges []netip.Prefix
}

// Protocol is a frontend's transport protocol.
type Protocol uint8

const (
	TCP Protocol = unix.IPPROTO_TCP
	UDP Protocol = unix.IPPROTO_UDP
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	}
	return fmt.Sprintf("protocol %d", uint8(p))
}

// Backend is a node a frontend's flows may go to.
type Backend struct {
	Name string
	IP   netip.Addr
}

// Table is the desired content of berth's table: the map elements the Frontends make.
type Table struct {
	Mode      Mode
	Frontends []nftables.SetElement
	Slots     []nftables.SetElement
	// Restricted are the frontend IPs with source ranges; Allowed their (frontend IP . client range) intervals.
	Restricted, Allowed []nftables.SetElement
	// Sets is how many backend sets (Maglev tables) there are.
	Sets int
}

// Build computes the table's elements for frontends, with Maglev tables of size slots. Frontends without a healthy
// backend get no element: their packets are not sent on (and find nothing on the LB host). In floating-IP mode
// marks must hold every backend (Marks.Update with the known nodes first); DNAT mode does not use it.
func Build(frontends []Frontend, slots int, mode Mode, marks *Marks) (Table, error) {
	if mode != DNAT && mode != FloatingIP {
		return Table{}, fmt.Errorf("dataplane: mode %q: want %s or %s", mode, FloatingIP, DNAT)
	}
	if mode == FloatingIP && marks == nil {
		return Table{}, fmt.Errorf("dataplane: floating-IP mode without node marks")
	}
	t := Table{Mode: mode}
	setIDs := map[string]uint32{}
	for _, f := range frontends {
		if !f.IP.Is4() {
			return Table{}, fmt.Errorf("frontend %s: not IPv4", f.IP)
		}
		if len(f.Backends) == 0 {
			continue
		}
		names := make([]string, len(f.Backends))
		for i, b := range f.Backends {
			names[i] = b.Name + "=" + b.IP.String()
		}
		slices.Sort(names)
		setKey := strings.Join(names, ",")
		id, ok := setIDs[setKey]
		if !ok {
			id = uint32(len(setIDs) + 1)
			setIDs[setKey] = id
			tab, err := maglev.Table(names, slots)
			if err != nil {
				return Table{}, fmt.Errorf("frontend %s:%d/%s: %w", f.IP, f.Port, f.Protocol, err)
			}
			for slot, b := range tab {
				_, ip, _ := strings.Cut(names[b], "=")
				addr := netip.MustParseAddr(ip)
				val := addr.AsSlice()
				if mode == FloatingIP {
					mark, ok := marks.Mark(addr)
					if !ok {
						return Table{}, fmt.Errorf("dataplane: node %s has no mark", addr)
					}
					val = native(mark)
				}
				t.Slots = append(t.Slots, nftables.SetElement{Key: concat(native(id), native(uint32(slot))), Val: val})
			}
		}
		ip := f.IP.As4()
		t.Frontends = append(t.Frontends, nftables.SetElement{
			Key: concat(ip[:], pad([]byte{byte(f.Protocol)}), pad(binaryutil.BigEndian.PutUint16(f.Port))),
			Val: concat(pad(binaryutil.BigEndian.PutUint16(f.NodePort)), native(id)),
		})
	}
	t.Sets = len(setIDs)
	ranges := map[netip.Addr][]netip.Prefix{}
	var restricted []netip.Addr
	for _, f := range frontends {
		if len(f.SourceRanges) == 0 {
			continue
		}
		if _, seen := ranges[f.IP]; !seen {
			restricted = append(restricted, f.IP)
		}
		ranges[f.IP] = append(ranges[f.IP], f.SourceRanges...)
	}
	slices.SortFunc(restricted, netip.Addr.Compare)
	for _, ip := range restricted {
		vip := ip.As4()
		t.Restricted = append(t.Restricted, nftables.SetElement{Key: vip[:]})
		for _, r := range mergeRanges(ranges[ip]) {
			first, last := r[0].As4(), r[1].As4()
			t.Allowed = append(t.Allowed, nftables.SetElement{Key: concat(vip[:], first[:]), KeyEnd: concat(vip[:], last[:])})
		}
	}
	return t, nil
}

// mergeRanges turns IPv4 prefixes into sorted, disjoint [first, last] address ranges (an interval set refuses
// overlaps). IPv6 prefixes are left out: frontends are IPv4.
func mergeRanges(ps []netip.Prefix) [][2]netip.Addr {
	var rs [][2]netip.Addr
	for _, p := range ps {
		if !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		first := p.Addr().As4()
		n := binary.BigEndian.Uint32(first[:]) | (1<<(32-p.Bits()) - 1)
		var last [4]byte
		binary.BigEndian.PutUint32(last[:], n)
		rs = append(rs, [2]netip.Addr{p.Addr(), netip.AddrFrom4(last)})
	}
	slices.SortFunc(rs, func(a, b [2]netip.Addr) int { return a[0].Compare(b[0]) })
	var out [][2]netip.Addr
	for _, r := range rs {
		if n := len(out); n > 0 && (!out[n-1][1].Less(r[0]) || out[n-1][1].Next() == r[0]) {
			if out[n-1][1].Less(r[1]) {
				out[n-1][1] = r[1]
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// sendBuffer is the netlink socket's send buffer: Apply sends the whole table in one batch (one sendmsg), about
// 50 bytes per element, so 10,000 Services take about 1 MB, more than the default limit (net.core.wmem_max).
const sendBuffer = 64 << 20

// Open connects to nftables in the network namespace netnsFd refers to (-1: this process's), with a send buffer
// large enough for Apply's batches (SO_SNDBUFFORCE, which needs CAP_NET_ADMIN, as nftables does).
func Open(netnsFd int) (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer)
		}); err != nil {
			return err
		}
		return serr
	})}
	if netnsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(netnsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("dataplane: nftables: %w", err)
	}
	return c, nil
}

// setsOf are the table's maps and sets (the slot map's data is a node address in DNAT mode, a mark in floating-IP
// mode).
func setsOf(table *nftables.Table, mode Mode) (frontends, slotMap, restricted, allowed *nftables.Set) {
	frontends = &nftables.Set{Table: table, Name: "frontends", IsMap: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService),
		DataType: nftables.MustConcatSetType(nftables.TypeInetService, nftables.TypeMark)}
	slotMap = &nftables.Set{Table: table, Name: "slots", IsMap: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeMark), DataType: nftables.TypeIPAddr,
		KeyByteOrder: binaryutil.NativeEndian}
	if mode == FloatingIP {
		slotMap.DataType = nftables.TypeMark
	}
	restricted = &nftables.Set{Table: table, Name: "restricted", KeyType: nftables.TypeIPAddr}
	allowed = &nftables.Set{Table: table, Name: "allowed", Interval: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)}
	return frontends, slotMap, restricted, allowed
}

// ApplyChanges changes the table from prev (what the last Apply or ApplyChanges put there) to next by adding and
// deleting map elements only, in one transaction: the cost of a change grows with what changed, not with the number
// of frontends. A change of mode is a full Apply. It does not repair drift: the caller runs Apply periodically, and
// after an error (a table deleted by hand makes this fail).
func ApplyChanges(conn *nftables.Conn, prev, next Table, slots int) (changed int, err error) {
	if prev.Mode != next.Mode {
		return -1, Apply(conn, next, slots)
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	frontends, slotMap, restricted, allowed := setsOf(table, next.Mode)
	for _, m := range []struct {
		set        *nftables.Set
		prev, next []nftables.SetElement
	}{{frontends, prev.Frontends, next.Frontends}, {slotMap, prev.Slots, next.Slots}} {
		del, add := diff(m.prev, m.next)
		changed += len(del) + len(add)
		for chunk := range slices.Chunk(del, 512) {
			if err := conn.SetDeleteElements(m.set, chunk); err != nil {
				return changed, fmt.Errorf("dataplane: map %s: %w", m.set.Name, err)
			}
		}
		for chunk := range slices.Chunk(add, 512) {
			if err := conn.SetAddElements(m.set, chunk); err != nil {
				return changed, fmt.Errorf("dataplane: map %s: %w", m.set.Name, err)
			}
		}
	}
	// The source-range sets are small; an interval set's elements do not diff one by one: refill on change.
	for _, m := range []struct {
		set        *nftables.Set
		prev, next []nftables.SetElement
	}{{restricted, prev.Restricted, next.Restricted}, {allowed, prev.Allowed, next.Allowed}} {
		if slices.EqualFunc(m.prev, m.next, sameElement) {
			continue
		}
		changed += len(m.prev) + len(m.next)
		conn.FlushSet(m.set)
		for chunk := range slices.Chunk(m.next, 512) {
			if err := conn.SetAddElements(m.set, chunk); err != nil {
				return changed, fmt.Errorf("dataplane: set %s: %w", m.set.Name, err)
			}
		}
	}
	if changed == 0 {
		return 0, nil
	}
	if err := conn.Flush(); err != nil {
		return changed, fmt.Errorf("dataplane: apply changes to table %s: %w", TableName, err)
	}
	return changed, nil
}

// diff is the elements of prev to delete and of next to add: those whose key is gone or whose value changed (a
// changed value is a delete and an add of the key in the same transaction).
func diff(prev, next []nftables.SetElement) (del, add []nftables.SetElement) {
	old := make(map[string][]byte, len(prev))
	for _, e := range prev {
		old[string(e.Key)] = e.Val
	}
	seen := make(map[string]bool, len(next))
	for _, e := range next {
		k := string(e.Key)
		seen[k] = true
		v, ok := old[k]
		if !ok {
			add = append(add, e)
		} else if !bytes.Equal(v, e.Val) {
			del = append(del, nftables.SetElement{Key: e.Key})
			add = append(add, e)
		}
	}
	for _, e := range prev {
		if !seen[string(e.Key)] {
			del = append(del, nftables.SetElement{Key: e.Key})
		}
	}
	return del, add
}

func sameElement(a, b nftables.SetElement) bool {
	return bytes.Equal(a.Key, b.Key) && bytes.Equal(a.KeyEnd, b.KeyEnd) && bytes.Equal(a.Val, b.Val) && a.IntervalEnd == b.IntervalEnd
}

// Apply replaces berth's table in the network namespace conn works in with t, in one netlink transaction: the
// kernel switches from the old table to the new one atomically, and conntrack keeps established flows. It is also
// the drift repair: whatever was changed by hand is replaced. slots must be the size t was built with.
func Apply(conn *nftables.Conn, t Table, slots int) error {
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	conn.AddTable(table) // so that the delete below finds one on a first run
	conn.DelTable(table)
	conn.AddTable(table)
	frontends, slotMap, restricted, allowed := setsOf(table, t.Mode)
	for _, m := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{frontends, t.Frontends}, {slotMap, t.Slots}, {restricted, t.Restricted}, {allowed, t.Allowed}} {
		if err := conn.AddSet(m.set, nil); err != nil {
			return fmt.Errorf("dataplane: map %s: %w", m.set.Name, err)
		}
		// In chunks: one netlink message holds a few thousand elements at most. They are all in one batch, so
		// the kernel still applies the table at once.
		for chunk := range slices.Chunk(m.elems, 512) {
			if err := conn.SetAddElements(m.set, chunk); err != nil {
				return fmt.Errorf("dataplane: map %s: %w", m.set.Name, err)
			}
		}
	}
	if t.Mode == DNAT {
		chain := conn.AddChain(&nftables.Chain{Name: "prerouting", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: append(pickExprs(frontends, slotMap, uint32(slots)),
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: rNode, RegProtoMin: rNodePort, Specified: true})})
	} else {
		// Before the routing decision (the mangle priority): a new flow's node mark is kept in its conntrack entry,
		// so that it stays on its node when the node set changes; later packets take the mark back from there.
		chain := conn.AddChain(&nftables.Chain{Name: "prerouting", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle})
		// Only the original direction: a node's reply (when it comes back through this host) must go to the
		// client, not follow the mark back to the node.
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeyDIRECTION, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}}, // IP_CT_DIR_ORIGINAL,
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: native(0xffff0000), Xor: native(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: native(MarkBase)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: 1},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}})
		conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: append(pickExprs(frontends, slotMap, uint32(slots)),
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: rNode},
			&expr.Ct{Key: expr.CtKeyMARK, SourceRegister: true, Register: rNode})})
	}
	// loadBalancerSourceRanges, before everything else: a packet to a restricted frontend IP from a client outside
	// its ranges is dropped.
	filter := conn.AddChain(&nftables.Chain{Name: "source-ranges", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityMangle - 10)})
	conn.AddRule(&nftables.Rule{Table: table, Chain: filter, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: restricted.Name, SetID: restricted.ID},
		&expr.Payload{DestRegister: rDaddr, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Payload{DestRegister: rDaddr + 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: rDaddr, SetName: allowed.Name, SetID: allowed.ID, Invert: true},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("dataplane: apply table %s: %w", TableName, err)
	}
	return nil
}

// Registers (32-bit: 8 to 23). The frontends map's key is daddr . l4proto . dport in 8-10, its data nodePort . set
// in 12-13; the hash of saddr . sport (16-17) goes to 14, so that set . slot is 13-14, the slots map's key; the node
// goes to 15.
const (
	rDaddr, rProto, rDport = 8, 9, 10
	rNodePort, rSet, rSlot = 12, 13, 14
	rNode                  = 15
	rSaddr, rSport         = 16, 17
)

// pickExprs look the flow's frontend up and pick its node: the node's address (DNAT) or mark (floating IP) in
// rNode, the frontend's nodePort in rNodePort. A packet to no frontend leaves the rule there.
func pickExprs(frontends, slotMap *nftables.Set, slots uint32) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: rDaddr, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: rProto},
		&expr.Payload{DestRegister: rDport, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: rDaddr, DestRegister: rNodePort, IsDestRegSet: true, SetName: frontends.Name, SetID: frontends.ID},
		&expr.Payload{DestRegister: rSaddr, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: rSport, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Hash{SourceRegister: rSaddr, Length: 8, Modulus: slots, Seed: 0xbe47, DestRegister: rSlot, Type: expr.HashTypeJenkins},
		&expr.Lookup{SourceRegister: rSet, DestRegister: rNode, IsDestRegSet: true, SetName: slotMap.Name, SetID: slotMap.ID},
	}
}

func concat(parts ...[]byte) []byte { return slices.Concat(parts...) }

// pad pads b to a register's 4 bytes, as concatenations do.
func pad(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }

// native is v in host byte order, as the hash expression writes its result.
func native(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
