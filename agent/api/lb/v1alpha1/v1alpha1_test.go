package v1alpha1

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/api/strict"
)

const valid = `apiVersion: lb.berth.dev/v1alpha1
kind: LoadBalancerConfig
spec:
  className: berth.dev/lb
  defaultClass: true
  pools:
    - name: public
      addresses: [203.0.113.0/29, 203.0.113.16-203.0.113.20]
    - name: reserved
      addresses: [198.51.100.7]
      autoAssign: false
  mode: dnat
  health: {interval: 2s, threshold: 3}
`

func TestValidConfig(t *testing.T) {
	c, err := Decode([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("valid config: %v", errs)
	}
	if c.Spec.Mode != ModeDNAT {
		t.Errorf("mode %q", c.Spec.Mode)
	}
	if c.Spec.Health.Interval.Duration != 2*time.Second || c.Spec.Health.Threshold != 3 {
		t.Errorf("health %+v", c.Spec.Health)
	}
	if !c.Spec.Pools[0].AutoAssigns() || c.Spec.Pools[1].AutoAssigns() {
		t.Errorf("autoAssign: %v %v, want true (default) and false", c.Spec.Pools[0].AutoAssigns(), c.Spec.Pools[1].AutoAssigns())
	}
}

// Every problem at once, each with its path: bad class, a pool without a name, a duplicate name, an address that
// is not one, an IPv6 CIDR, host bits, a backwards range, and overlaps within and across pools.
func TestValidateReportsEveryProblemWithItsPath(t *testing.T) {
	doc := `apiVersion: lb.berth.dev/v1alpha1
kind: LoadBalancerConfig
spec:
  className: no-prefix
  pools:
    - name: a
      addresses: [10.0.0.0/30, 10.0.0.2-10.0.0.9, banana, "2001:db8::/64", 10.1.0.1/24, 10.2.0.9-10.2.0.1]
    - name: a
      addresses: [10.0.0.9]
    - name: ""
      addresses: []
  mode: floating
  health: {interval: 10ms, threshold: 11}
`
	c, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Validate().ToAggregate().Error()
	for _, want := range []string{
		"spec.className: Invalid value: \"no-prefix\": a loadBalancerClass needs a domain prefix",
		"spec.pools[0].addresses[1]: Invalid value: \"10.0.0.2-10.0.0.9\": overlaps spec.pools[0].addresses[0]",
		"spec.pools[0].addresses[2]: Invalid value: \"banana\"",
		"spec.pools[0].addresses[3]: Invalid value: \"2001:db8::/64\": 2001:db8::/64 is not IPv4",
		"spec.pools[0].addresses[4]: Invalid value: \"10.1.0.1/24\": 10.1.0.1/24 has host bits set: the network is 10.1.0.0/24",
		"spec.pools[0].addresses[5]: Invalid value: \"10.2.0.9-10.2.0.1\": range 10.2.0.9-10.2.0.1: the first address is after the last",
		"spec.pools[1].name: Duplicate value: \"a\"",
		"spec.pools[1].addresses[0]: Invalid value: \"10.0.0.9\": overlaps spec.pools[0].addresses[1]",
		"spec.pools[2].name: Invalid value: \"\"",
		"spec.pools[2].addresses: Required value",
		"spec.health.interval: Invalid value: \"10ms\": between 100ms and 5m",
		"spec.health.threshold: Invalid value: 11",
		"spec.mode: Unsupported value: \"floating\": supported values: \"floatingIP\", \"dnat\"",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if _, err := Decode([]byte(strings.Replace(valid, "defaultClass", "defaultClas", 1))); !errors.As(err, new(*strict.Error)) || !strings.Contains(err.Error(), `unknown field "spec.defaultClas"`) {
		t.Errorf("a misspelt field: %v", err)
	}
	if c, _ := Decode([]byte("apiVersion: v1\nkind: X\nspec: {}\n")); len(c.Validate()) != 3 {
		t.Errorf("wrong apiVersion, kind and no pools: %v", c.Validate())
	}
}

func TestParseRange(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.0/28":      "203.0.113.0-203.0.113.15",
		"203.0.113.7/32":      "203.0.113.7",
		"0.0.0.0/0":           "0.0.0.0-255.255.255.255",
		"10.0.0.1 - 10.0.0.3": "10.0.0.1-10.0.0.3",
		"10.0.0.1":            "10.0.0.1",
		"10.0.0.255-10.0.1.0": "10.0.0.255-10.0.1.0",
	} {
		r, err := ParseRange(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseRange(%q) = %v, %v; want %s", in, r, err, want)
		}
	}
	if r, _ := ParseRange("10.0.0.0/24"); r.Size() != 256 {
		t.Errorf("size of a /24: %d", r.Size())
	}
}

// Whatever it is given, ParseRange either refuses it or returns an IPv4 range whose first address is not after its
// last, and which parses back from its own String to itself.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"203.0.113.0/28", "10.0.0.1-10.0.0.3", "10.0.0.1", "::1", "1.2.3.4/33", "-", "1.2.3.4-", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			return
		}
		if !r.First.Is4() || !r.Last.Is4() || r.Last.Less(r.First) || r.Size() == 0 {
			t.Fatalf("ParseRange(%q) = %v", s, r)
		}
		again, err := ParseRange(r.String())
		if err != nil || again != r {
			t.Fatalf("%q → %v → %v, %v", s, r, again, err)
		}
		if netip.MustParseAddr(r.First.String()) != r.First {
			t.Fatalf("first %v", r.First)
		}
	})
}
