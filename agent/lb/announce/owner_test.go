package announce

import (
	"fmt"
	"net/netip"
	"testing"
)

// Every IP has one owner among the live hosts, the IPs spread over the hosts, and when a host leaves only its IPs
// move (to the surviving hosts); the answer does not depend on the order of the live set.
func TestOwnerMovesOnlyTheDeadHostsIPs(t *testing.T) {
	hosts := []string{"lb-a", "lb-b", "lb-c"}
	before := map[netip.Addr]string{}
	count := map[string]int{}
	ip := netip.MustParseAddr("203.0.113.0")
	for range 300 {
		ip = ip.Next()
		o := Owner(ip, hosts)
		if o2 := Owner(ip, []string{"lb-c", "lb-a", "lb-b"}); o2 != o {
			t.Fatalf("%s: owner %s, or %s in another order", ip, o, o2)
		}
		before[ip] = o
		count[o]++
	}
	for _, h := range hosts {
		if count[h] < 60 {
			t.Errorf("%s owns %d of 300 IPs: %v", h, count[h], count)
		}
	}
	moved := 0
	for ip, o := range before {
		after := Owner(ip, []string{"lb-a", "lb-c"})
		if o != "lb-b" && after != o {
			t.Errorf("%s moved from the live %s to %s", ip, o, after)
		}
		if o == "lb-b" {
			moved++
			if after == "lb-b" {
				t.Errorf("%s stayed on the dead host", ip)
			}
		}
	}
	if moved != count["lb-b"] {
		t.Error(fmt.Sprint("moved ", moved, ", lb-b owned ", count["lb-b"]))
	}
	if Owner(ip, nil) != "" {
		t.Error("an owner without hosts")
	}
}
