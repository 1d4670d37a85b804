package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func pools() []Pool {
	return []Pool{
		{Name: "public", Ranges: []Range{{addr("203.0.113.1"), addr("203.0.113.2")}}, AutoAssign: true},
		{Name: "more", Ranges: []Range{{addr("203.0.113.10"), addr("203.0.113.10")}}, AutoAssign: true},
		{Name: "reserved", Ranges: []Range{{addr("198.51.100.7"), addr("198.51.100.8")}}},
	}
}

func reason(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func TestAssign(t *testing.T) {
	a := New(pools())
	must := func(key string, req Request, want string) {
		t.Helper()
		as, err := a.Assign(key, req)
		if err != nil || as.Address.String() != want {
			t.Fatalf("Assign(%s, %+v) = %v, %v; want %s", key, req, as, err, want)
		}
	}
	must("ns/a", Request{}, "203.0.113.1")
	must("ns/a", Request{}, "203.0.113.1") // kept
	must("ns/b", Request{}, "203.0.113.2")
	must("ns/c", Request{}, "203.0.113.10") // the first pool is full: the next auto-assigning one
	if _, err := a.Assign("ns/d", Request{}); reason(err) != PoolExhausted {
		t.Errorf("a fourth auto-assigned Service: %v, want PoolExhausted (reserved does not auto-assign)", err)
	}
	must("ns/d", Request{Pool: "reserved"}, "198.51.100.7")
	must("ns/e", Request{Address: addr("198.51.100.8")}, "198.51.100.8") // asked for: any pool
	if _, err := a.Assign("ns/f", Request{Address: addr("198.51.100.8")}); reason(err) != AddressInUse {
		t.Errorf("an address another Service holds: %v, want AddressInUse", err)
	}
	if _, err := a.Assign("ns/f", Request{Address: addr("192.0.2.1")}); reason(err) != AddressNotInPool {
		t.Errorf("an address in no pool: %v, want AddressNotInPool", err)
	}
	if _, err := a.Assign("ns/f", Request{Address: addr("203.0.113.10"), Pool: "reserved"}); reason(err) != AddressNotInPool {
		t.Errorf("an address outside the pool named: %v, want AddressNotInPool", err)
	}
	if _, err := a.Assign("ns/f", Request{Pool: "nope"}); reason(err) != UnknownPool {
		t.Errorf("an unknown pool: %v, want UnknownPool", err)
	}
	// A failed change keeps what the Service had.
	if _, err := a.Assign("ns/a", Request{Address: addr("198.51.100.8")}); reason(err) != AddressInUse {
		t.Errorf("moving onto a taken address: %v", err)
	}
	if as, _ := a.Get("ns/a"); as.Address != addr("203.0.113.1") {
		t.Errorf("after a failed change ns/a holds %v", as)
	}
	// A change that can be made moves it and frees the old address.
	a.Release("ns/e")
	must("ns/a", Request{Address: addr("198.51.100.8")}, "198.51.100.8")
	must("ns/g", Request{}, "203.0.113.1")
	if _, err := New(nil).Assign("x/y", Request{}); reason(err) != NoAutoAssignPool {
		t.Errorf("no pools: %v", err)
	}
}

// A restarted controller restores the addresses from the Services' status first: a live address is never handed
// to another Service, the first restored keeps a contested one, and one in no pool is refused.
func TestRestoreBeforeAssign(t *testing.T) {
	a := New(pools())
	if _, err := a.Restore("ns/old", addr("203.0.113.2")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Restore("ns/copy", addr("203.0.113.2")); reason(err) != AddressInUse {
		t.Errorf("a second Service with the same address in its status: %v", err)
	}
	if _, err := a.Restore("ns/gone", addr("192.0.2.9")); reason(err) != AddressNotInPool {
		t.Errorf("an address of a removed pool: %v", err)
	}
	as, _ := a.Assign("ns/new", Request{})
	bs, _ := a.Assign("ns/new2", Request{})
	if as.Address != addr("203.0.113.1") || bs.Address != addr("203.0.113.10") {
		t.Errorf("new Services got %v and %v; the restored 203.0.113.2 must be skipped", as, bs)
	}
}

// Whatever the sequence of assignments, restores and releases: no address has two holders, every held address is
// in the pool recorded for it and satisfies what was asked, and assigning again what was just assigned changes
// nothing.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{3, 3, 3, 200, 17, 5, 0, 255})
	f.Fuzz(func(t *testing.T, ops []byte) {
		a := New(pools())
		all := []netip.Addr{addr("203.0.113.1"), addr("203.0.113.2"), addr("203.0.113.3"), addr("203.0.113.10"),
			addr("198.51.100.7"), addr("198.51.100.8"), addr("192.0.2.1")}
		poolNames := []string{"", "public", "more", "reserved", "nope"}
		for i := 0; i+1 < len(ops); i += 2 {
			key := fmt.Sprintf("ns/s%d", ops[i]%6)
			arg := int(ops[i+1])
			switch ops[i] % 4 {
			case 0, 1:
				req := Request{Pool: poolNames[arg%len(poolNames)]}
				if arg&0x80 != 0 {
					req.Address = all[arg%len(all)]
				}
				_, had := a.held[key]
				as, err := a.Assign(key, req)
				if err != nil {
					continue
				}
				if (req.Address.IsValid() && as.Address != req.Address) || (req.Pool != "" && as.Pool != req.Pool) {
					t.Fatalf("Assign(%s, %+v) = %+v", key, req, as)
				}
				if !req.Address.IsValid() && !had {
					// A new address is the lowest free one of its pool: every lower address of it is held.
					for _, r := range poolOf(a.pools, as.Address).Ranges {
						for x := r.First; x.Less(as.Address) && !r.Last.Less(x); x = x.Next() {
							if _, held := a.owner[x]; !held {
								t.Fatalf("Assign(%s, %+v) = %v, but %v is free", key, req, as.Address, x)
							}
						}
					}
				}
				if again, err := a.Assign(key, req); err != nil || again != as {
					t.Fatalf("assigning again: %+v, %v; want %+v", again, err, as)
				}
			case 2:
				a.Restore(key, all[arg%len(all)])
			case 3:
				a.Release(key)
			}
			seen := map[netip.Addr]string{}
			for k, as := range a.held {
				if o, dup := seen[as.Address]; dup {
					t.Fatalf("%s held by %s and %s", as.Address, o, k)
				}
				seen[as.Address] = k
				if p := poolOf(a.pools, as.Address); p == nil || p.Name != as.Pool || a.owner[as.Address] != k {
					t.Fatalf("%s holds %+v: pool %v, owner %q", k, as, p, a.owner[as.Address])
				}
			}
			if len(a.owner) != len(a.held) {
				t.Fatalf("%d owners, %d holders", len(a.owner), len(a.held))
			}
		}
	})
}

// Assigning 10,000 Services, one after another, from a /18 pool (the lowest free address each time).
func BenchmarkAssign10000(b *testing.B) {
	pool := []Pool{{Name: "big", Ranges: []Range{{addr("10.64.0.0"), addr("10.64.63.255")}}, AutoAssign: true}}
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = fmt.Sprintf("ns/s%d", i)
	}
	for b.Loop() {
		a := New(pool)
		for _, k := range keys {
			if _, err := a.Assign(k, Request{}); err != nil {
				b.Fatal(err)
			}
		}
	}
}
