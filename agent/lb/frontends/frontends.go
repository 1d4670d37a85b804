// Package frontends turns what the cluster says (Services of berth's class with their frontend IP in their
// status, Nodes, and which nodes have local endpoints) into the data plane's frontends: one per Service port, each
// with the nodes its new flows may go to. It is a pure function: the data plane's sync calls it on every change
// and on every periodic resync.
package frontends

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/nodeready"
)

// ExcludeLabel takes a node out of every load balancer's backends (Kubernetes' well-known label).
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// Input is the cluster as the data plane sees it.
type Input struct {
	Class    lbsvc.Class
	Services []*corev1.Service
	Nodes    []*corev1.Node
	// Local is, for each Service (namespace/name) with externalTrafficPolicy Local, the nodes that have a ready
	// endpoint of it: only those get its flows, so that the client's address reaches the pod unchanged.
	Local map[string][]string
	// Unhealthy are nodes whose health probe failed (interval × threshold): they get no new flows, unless every
	// node would then be out (see FailOpen).
	Unhealthy map[string]bool
	// NodePorts says the data plane sends to the nodes' nodePorts (DNAT mode): a port without one
	// (allocateLoadBalancerNodePorts: false) cannot be served then. The floating-IP mode does not use them.
	NodePorts bool
}

// Skipped is a Service port the data plane cannot serve, and why.
type Skipped struct {
	Service, Reason string
}

// Build returns the frontends, sorted (frontend IP, protocol, port), and what it skipped.
func Build(in Input) ([]dataplane.Frontend, []Skipped) {
	var eligible []dataplane.Backend
	for _, n := range in.Nodes {
		if b, ok := backend(n); ok {
			eligible = append(eligible, b)
		}
	}
	eligible = FailOpen(eligible, func(b dataplane.Backend) bool { return in.Unhealthy[b.Name] })
	slices.SortFunc(eligible, func(a, b dataplane.Backend) int { return strings.Compare(a.Name, b.Name) })
	var out []dataplane.Frontend
	var skipped []Skipped
	for _, svc := range in.Services {
		if !in.Class.Serves(svc) {
			continue
		}
		ip, ok := frontendIP(svc)
		if !ok {
			continue // no frontend IP yet: the controller has not assigned one
		}
		backends := eligible
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			local := in.Local[lbsvc.Key(svc)]
			backends = slices.DeleteFunc(slices.Clone(eligible), func(b dataplane.Backend) bool { return !slices.Contains(local, b.Name) })
		}
		all, problem := lbsvc.SourceRanges(svc)
		if problem != "" {
			skipped = append(skipped, Skipped{lbsvc.Key(svc), problem})
			backends = nil // no node: the frontend drops every new flow
		}
		var ranges []netip.Prefix
		for _, p := range all {
			if p.Addr().Is4() {
				ranges = append(ranges, p)
			}
		}
		if len(svc.Spec.LoadBalancerSourceRanges) > 0 && len(ranges) == 0 {
			// Only IPv6 ranges: no IPv4 client may come in.
			ranges = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/32")}
		}
		for _, p := range svc.Spec.Ports {
			if problem := lbsvc.PortProblem(p, in.NodePorts); problem != "" {
				skipped = append(skipped, Skipped{lbsvc.Key(svc), problem})
				continue
			}
			proto := dataplane.TCP
			if p.Protocol == corev1.ProtocolUDP {
				proto = dataplane.UDP
			}
			out = append(out, dataplane.Frontend{IP: ip, Protocol: proto, Port: uint16(p.Port), NodePort: uint16(p.NodePort),
				Backends: backends, SourceRanges: ranges})
		}
	}
	slices.SortFunc(out, func(a, b dataplane.Frontend) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		if a.Protocol != b.Protocol {
			return int(a.Protocol) - int(b.Protocol)
		}
		return int(a.Port) - int(b.Port)
	})
	return out, skipped
}

// FailOpen returns the candidates that are not down, or all of them when every one is: a probe that fails
// everywhere at once says more about the prober (its own network, a loaded cluster answering late) than about the
// nodes, which the API server still reports Ready with endpoints. Dropping every flow then would turn a probing
// problem into an outage, so berth fails open, as AWS's Network Load Balancer and Google Cloud's load balancers do.
func FailOpen[T any](candidates []T, down func(T) bool) []T {
	up := slices.DeleteFunc(slices.Clone(candidates), down)
	if len(up) == 0 {
		return candidates
	}
	return up
}

// backend is a node that may take new flows by what the API server says: Ready, not being deleted, not excluded by
// label, with an InternalIP. Its probe is judged after (FailOpen).
func backend(n *corev1.Node) (dataplane.Backend, bool) {
	if _, excluded := n.Labels[ExcludeLabel]; excluded || n.DeletionTimestamp != nil || !nodeready.Ready(n) {
		return dataplane.Backend{}, false
	}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
				return dataplane.Backend{Name: n.Name, IP: ip}, true
			}
		}
	}
	return dataplane.Backend{}, false
}

func frontendIP(svc *corev1.Service) (netip.Addr, bool) {
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil && ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}
