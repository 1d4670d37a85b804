// Package ipam hands out the shared load balancer's frontend IPs: one per Service, from named pools of address
// ranges, honouring an address or a pool the Service asks for. It is plain state with no I/O: the controller
// restores it from the Services' status before it assigns anything, so a restarted or failed-over controller never
// gives a live address to another Service.
package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// Range is an inclusive range of IPv4 addresses.
type Range struct{ First, Last netip.Addr }

func (r Range) contains(a netip.Addr) bool { return !a.Less(r.First) && !r.Last.Less(a) }

// Pool is a named set of address ranges.
type Pool struct {
	Name   string
	Ranges []Range
	// AutoAssign: Services that name no pool and no address get addresses from it.
	AutoAssign bool
}

// Request is what a Service asks for: an address (its annotation or spec.loadBalancerIP), a pool (its
// annotation), or neither.
type Request struct {
	Address netip.Addr
	Pool    string
}

// Reason says why an assignment failed; the controller uses it as the Event's and the condition's reason.
type Reason string

const (
	// PoolExhausted: every address of the pools the Service may use is taken.
	PoolExhausted Reason = "PoolExhausted"
	// AddressInUse: the address asked for belongs to another Service.
	AddressInUse Reason = "AddressInUse"
	// AddressNotInPool: the address asked for is in no pool (or not in the pool it names).
	AddressNotInPool Reason = "AddressNotInPool"
	// UnknownPool: the pool asked for does not exist.
	UnknownPool Reason = "UnknownPool"
	// NoAutoAssignPool: no pool hands out addresses to Services that name none.
	NoAutoAssignPool Reason = "NoAutoAssignPool"
)

// Error is a failed assignment.
type Error struct {
	Reason  Reason
	Message string
}

func (e *Error) Error() string { return string(e.Reason) + ": " + e.Message }

// Assignment is a Service's address and the pool it came from.
type Assignment struct {
	Address netip.Addr
	Pool    string
}

// Allocator is the pools and who holds which address. Keys are Services' namespace/name.
type Allocator struct {
	pools []Pool
	owner map[netip.Addr]string
	held  map[string]Assignment
	// low is, per pool, an address below which every address of the pool is held: the search for a free one
	// starts there, so assigning n Services one after another is O(n), not O(n²).
	low map[string]netip.Addr
}

// New returns an allocator over pools (validated: names unique, ranges IPv4 and not overlapping).
func New(pools []Pool) *Allocator {
	return &Allocator{pools: pools, owner: map[netip.Addr]string{}, held: map[string]Assignment{}, low: map[string]netip.Addr{}}
}

// Get returns what key holds.
func (a *Allocator) Get(key string) (Assignment, bool) { as, ok := a.held[key]; return as, ok }

// Owner returns who holds addr.
func (a *Allocator) Owner(addr netip.Addr) (string, bool) { k, ok := a.owner[addr]; return k, ok }

// Len is how many addresses are held.
func (a *Allocator) Len() int { return len(a.held) }

// Assign gives key an address that satisfies req and returns it. What key holds already is kept when it still
// satisfies req (so an unchanged Service keeps its address across restarts); otherwise the new address is taken
// first and the old one released only then, so a failed change leaves key with what it had. The free address chosen
// is the lowest of the first pool that may serve req: the same state gives the same answer.
func (a *Allocator) Assign(key string, req Request) (Assignment, error) {
	pools, err := a.eligible(req)
	if err != nil {
		return Assignment{}, err
	}
	if cur, ok := a.held[key]; ok && satisfies(cur, req, pools) {
		return cur, nil
	}
	var as Assignment
	if req.Address.IsValid() {
		p := poolOf(pools, req.Address)
		if p == nil {
			where := "any pool"
			if req.Pool != "" {
				where = "pool " + req.Pool
			}
			return Assignment{}, &Error{AddressNotInPool, fmt.Sprintf("%s is not in %s", req.Address, where)}
		}
		if o, taken := a.owner[req.Address]; taken && o != key {
			return Assignment{}, &Error{AddressInUse, fmt.Sprintf("%s belongs to %s", req.Address, o)}
		}
		as = Assignment{req.Address, p.Name}
	} else {
		found := false
		for _, p := range pools {
			if addr, ok := a.free(p); ok {
				as, found = Assignment{addr, p.Name}, true
				break
			}
		}
		if !found {
			names := make([]string, len(pools))
			for i, p := range pools {
				names[i] = p.Name
			}
			return Assignment{}, &Error{PoolExhausted, fmt.Sprintf("no free address in pool(s) %v", names)}
		}
	}
	a.Release(key)
	a.owner[as.Address], a.held[key] = key, as
	return as, nil
}

// Restore records that key holds addr, as a Service's status says: the controller calls it for every Service
// before it assigns anything. An address outside every pool (the pools changed) is refused, and so is one another
// key holds already (the first restored keeps it; call in the Services' creation order).
func (a *Allocator) Restore(key string, addr netip.Addr) (Assignment, error) {
	p := poolOf(a.pools, addr)
	if p == nil {
		return Assignment{}, &Error{AddressNotInPool, fmt.Sprintf("%s (in its status) is in no pool", addr)}
	}
	if o, taken := a.owner[addr]; taken && o != key {
		return Assignment{}, &Error{AddressInUse, fmt.Sprintf("%s (in its status) belongs to %s", addr, o)}
	}
	a.Release(key)
	as := Assignment{addr, p.Name}
	a.owner[addr], a.held[key] = key, as
	return as, nil
}

// Release frees what key holds, if anything.
func (a *Allocator) Release(key string) {
	if cur, ok := a.held[key]; ok {
		delete(a.owner, cur.Address)
		delete(a.held, key)
		if low, ok := a.low[cur.Pool]; ok && cur.Address.Less(low) {
			a.low[cur.Pool] = cur.Address
		}
	}
}

// eligible returns the pools req may be served from.
func (a *Allocator) eligible(req Request) ([]Pool, error) {
	if req.Pool != "" {
		for _, p := range a.pools {
			if p.Name == req.Pool {
				return []Pool{p}, nil
			}
		}
		return nil, &Error{UnknownPool, fmt.Sprintf("no pool named %q", req.Pool)}
	}
	if req.Address.IsValid() {
		return a.pools, nil // an address asked for may come from any pool, auto-assigning or not
	}
	var out []Pool
	for _, p := range a.pools {
		if p.AutoAssign {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, &Error{NoAutoAssignPool, "no pool has autoAssign; name one with the lb.berth.dev/pool annotation"}
	}
	return out, nil
}

func satisfies(cur Assignment, req Request, pools []Pool) bool {
	if req.Address.IsValid() && cur.Address != req.Address {
		return false
	}
	return slices.ContainsFunc(pools, func(p Pool) bool { return p.Name == cur.Pool })
}

func poolOf(pools []Pool, addr netip.Addr) *Pool {
	for i, p := range pools {
		for _, r := range p.Ranges {
			if r.contains(addr) {
				return &pools[i]
			}
		}
	}
	return nil
}

// free returns the lowest address of p nobody holds, searching from the pool's low mark.
func (a *Allocator) free(p Pool) (netip.Addr, bool) {
	low, hinted := a.low[p.Name]
	for _, r := range p.Ranges {
		if hinted && r.Last.Less(low) {
			continue
		}
		start := r.First
		if hinted && start.Less(low) {
			start = low
		}
		for addr := start; ; addr = addr.Next() {
			if _, taken := a.owner[addr]; !taken {
				a.low[p.Name] = addr
				return addr, true
			}
			if addr == r.Last {
				break
			}
		}
	}
	return netip.Addr{}, false
}
