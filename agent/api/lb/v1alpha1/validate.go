package v1alpha1

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"berth.dev/berth/agent/api/strict"
)

// Validate returns every problem with c, each with its field path.
func (c *LoadBalancerConfig) Validate() field.ErrorList {
	errs := strict.TypeMeta(c.APIVersion, c.Kind, APIVersion, Kind)
	spec := field.NewPath("spec")
	if c.Spec.ClassName != "" {
		for _, msg := range validation.IsQualifiedName(c.Spec.ClassName) {
			errs = append(errs, field.Invalid(spec.Child("className"), c.Spec.ClassName, msg))
		}
		if !strings.Contains(c.Spec.ClassName, "/") {
			errs = append(errs, field.Invalid(spec.Child("className"), c.Spec.ClassName, "a loadBalancerClass needs a domain prefix, e.g. berth.dev/lb"))
		}
	}
	pools := spec.Child("pools")
	if len(c.Spec.Pools) == 0 {
		errs = append(errs, field.Required(pools, "at least one pool of frontend addresses"))
	}
	names := map[string]bool{}
	type owned struct {
		r    Range
		path *field.Path
	}
	var all []owned
	for i, p := range c.Spec.Pools {
		pp := pools.Index(i)
		for _, msg := range validation.IsDNS1123Label(p.Name) {
			errs = append(errs, field.Invalid(pp.Child("name"), p.Name, msg))
		}
		if names[p.Name] {
			errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
		}
		names[p.Name] = true
		if len(p.Addresses) == 0 {
			errs = append(errs, field.Required(pp.Child("addresses"), "CIDRs or ranges"))
		}
		for j, a := range p.Addresses {
			r, err := ParseRange(a)
			if err != nil {
				errs = append(errs, field.Invalid(pp.Child("addresses").Index(j), a, err.Error()))
				continue
			}
			all = append(all, owned{r, pp.Child("addresses").Index(j)})
		}
	}
	if m := c.Spec.Mode; m != "" && m != ModeFloatingIP && m != ModeDNAT {
		errs = append(errs, field.NotSupported(spec.Child("mode"), m, []string{ModeFloatingIP, ModeDNAT}))
	}
	h := spec.Child("health")
	if d := c.Spec.Health.Interval.Duration; d != 0 && (d < 100*time.Millisecond || d > 5*time.Minute) {
		errs = append(errs, field.Invalid(h.Child("interval"), d.String(), "between 100ms and 5m"))
	}
	if n := c.Spec.Health.Threshold; n < 0 || n > 10 {
		errs = append(errs, field.Invalid(h.Child("threshold"), n, "between 1 and 10 (0: the default, 2)"))
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].r.First.Less(all[j].r.First) })
	for i := 1; i < len(all); i++ {
		if prev := all[i-1]; !prev.r.Last.Less(all[i].r.First) {
			errs = append(errs, field.Invalid(all[i].path, all[i].r.String(), "overlaps "+prev.path.String()+" ("+prev.r.String()+")"))
		}
	}
	return strict.CutValues(errs)
}

// Range is an inclusive range of IPv4 addresses.
type Range struct{ First, Last netip.Addr }

func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Size is how many addresses r holds.
func (r Range) Size() uint64 {
	f, l := r.First.As4(), r.Last.As4()
	return uint64(be32(l)) - uint64(be32(f)) + 1
}

func be32(b [4]byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// ParseRange reads one entry of a pool's addresses: an IPv4 CIDR ("203.0.113.0/28", every address of the network),
// a range ("203.0.113.10-203.0.113.20", both ends included, the first not after the last) or one address.
func ParseRange(s string) (Range, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		f, err := parseIPv4(strings.TrimSpace(first))
		if err != nil {
			return Range{}, err
		}
		l, err := parseIPv4(strings.TrimSpace(last))
		if err != nil {
			return Range{}, err
		}
		if l.Less(f) {
			return Range{}, fmt.Errorf("range %s: the first address is after the last", s)
		}
		return Range{f, l}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("want a CIDR such as 203.0.113.0/28, a range such as 203.0.113.10-203.0.113.20, or an address")
		}
		if !p.Addr().Is4() {
			return Range{}, fmt.Errorf("%s is not IPv4 (only IPv4 frontends are supported)", s)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("%s has host bits set: the network is %s", s, p.Masked())
		}
		first := p.Addr().As4()
		n := be32(first) | (1<<(32-p.Bits()) - 1)
		return Range{p.Addr(), netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})}, nil
	}
	a, err := parseIPv4(s)
	if err != nil {
		return Range{}, err
	}
	return Range{a, a}, nil
}

func parseIPv4(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("want a CIDR such as 203.0.113.0/28, a range such as 203.0.113.10-203.0.113.20, or an address")
	}
	if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s is not IPv4 (only IPv4 frontends are supported)", s)
	}
	return a, nil
}

// AutoAssigns reports whether p hands out addresses to Services that name no pool (default true).
func (p Pool) AutoAssigns() bool { return p.AutoAssign == nil || *p.AutoAssign }
