package clusterdns

import (
	"net/netip"
	"testing"
)

func TestServiceIPIsTheTenthAddress(t *testing.T) {
	for cidr, want := range map[string]string{"10.96.0.0/12": "10.96.0.10", "172.20.0.0/16": "172.20.0.10", "10.100.5.0/24": "10.100.5.10"} {
		if got := ServiceIP(netip.MustParsePrefix(cidr)); got.String() != want {
			t.Errorf("ServiceIP(%s) = %s, want %s", cidr, got, want)
		}
	}
}
