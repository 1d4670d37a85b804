package maglev

import (
	"fmt"
	"slices"
	"testing"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i+1)
	}
	return out
}

func counts(t []int, n int) []int {
	c := make([]int, n)
	for _, b := range t {
		c[b]++
	}
	return c
}

// Balance: with up to 25 backends, each owns within 10% of an equal share of the 251 slots (Maglev's own bound
// for M ≥ 10 N is a few per cent; this is the property berth relies on).
func TestBalance(t *testing.T) {
	for n := 1; n <= 25; n++ {
		tab, err := Table(names(n), DefaultSize)
		if err != nil {
			t.Fatal(err)
		}
		share := float64(DefaultSize) / float64(n)
		for b, c := range counts(tab, n) {
			if float64(c) < share*0.9-1 || float64(c) > share*1.1+1 {
				t.Errorf("%d backends: backend %d owns %d slots, share %.1f", n, b, c, share)
			}
		}
	}
}

// Consistency: the table depends only on the set (any order), and removing one of N backends moves only the
// slots it owned, plus few others (Maglev's disruption is close to the minimal 1/N).
func TestMinimalDisruption(t *testing.T) {
	all := names(10)
	tab, _ := Table(all, DefaultSize)
	rev := slices.Clone(all)
	slices.Reverse(rev)
	tabRev, _ := Table(rev, DefaultSize)
	for s := range tab {
		if all[tab[s]] != rev[tabRev[s]] {
			t.Fatalf("slot %d: %s in one order, %s in another", s, all[tab[s]], rev[tabRev[s]])
		}
	}
	less := append(slices.Clone(all[:4]), all[5:]...) // node-5 goes
	tabLess, _ := Table(less, DefaultSize)
	moved := 0
	for s := range tab {
		if all[tab[s]] != "node-5" && all[tab[s]] != less[tabLess[s]] {
			moved++
		}
	}
	if moved > DefaultSize/10 {
		t.Errorf("removing one of 10 backends moved %d slots of the others (of %d)", moved, DefaultSize)
	}
	t.Logf("removing one of 10 backends: its %d slots moved, and %d of the others", counts(tab, 10)[4], moved)
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct {
		backends []string
		size     int
	}{{names(3), 250}, {names(3), 1}, {names(7), 7}, {[]string{"a", "a"}, 7}} {
		if _, err := Table(c.backends, c.size); err == nil {
			t.Errorf("Table(%v, %d): no error", c.backends, c.size)
		}
	}
	if tab, err := Table(nil, DefaultSize); tab != nil || err != nil {
		t.Errorf("no backends: %v, %v", tab, err)
	}
}
