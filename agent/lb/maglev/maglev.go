// Package maglev computes Maglev lookup tables (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
// Load Balancer", NSDI 2016): a fixed number of slots, each naming a backend, filled so that every backend owns
// about the same number of slots and a change of the backend set moves few of them. A flow's backend is the slot
// its hash picks, so every load-balancer host that computes the table from the same backends picks the same
// backend for the same flow, without sharing any state.
package maglev

import (
	"errors"
	"hash/fnv"
	"slices"
)

// DefaultSize is the slot count berth uses: a prime, so that every skip is coprime with it, and large enough
// that with up to 25 backends each owns within about 10% of its share.
const DefaultSize = 251

// Table returns, for each of size slots, the index into backends of the backend that owns it. backends are the
// backends' names (node names), in any order: the table depends only on the set. size must be a prime larger than
// the number of backends. No backend: nil.
func Table(backends []string, size int) ([]int, error) {
	if len(backends) == 0 {
		return nil, nil
	}
	if size < 2 || !prime(size) {
		return nil, errors.New("maglev: the table size must be a prime")
	}
	if len(backends) >= size {
		return nil, errors.New("maglev: more backends than slots")
	}
	names := slices.Clone(backends)
	slices.Sort(names)
	if len(slices.Compact(slices.Clone(names))) != len(names) {
		return nil, errors.New("maglev: duplicate backend")
	}
	n := len(names)
	offset, skip := make([]int, n), make([]int, n)
	for i, b := range names {
		offset[i] = int(hash(b, 0xbe47) % uint64(size))
		skip[i] = int(hash(b, 0x5eed)%uint64(size-1)) + 1
	}
	entry := make([]int, size)
	for i := range entry {
		entry[i] = -1
	}
	next := make([]int, n)
	for filled := 0; ; {
		for i := range n {
			c := (offset[i] + next[i]*skip[i]) % size
			for entry[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % size
			}
			entry[c] = i
			next[i]++
			if filled++; filled == size {
				// Indices into the sorted names; map them back to the caller's order.
				pos := make([]int, n)
				for i, name := range names {
					pos[i] = slices.Index(backends, name)
				}
				for s := range entry {
					entry[s] = pos[entry[s]]
				}
				return entry, nil
			}
		}
	}
}

func hash(s string, seed uint64) uint64 {
	h := fnv.New64a()
	var b [8]byte
	for i := range b {
		b[i] = byte(seed >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(s))
	return h.Sum64()
}

func prime(n int) bool {
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return n >= 2
}
