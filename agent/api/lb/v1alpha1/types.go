// Package v1alpha1 is berth's load-balancer configuration API, lb.berth.dev/v1alpha1 LoadBalancerConfig: the
// frontend address pools of the one shared L4 load balancer and how it balances, read by `berth-agent lb`. Like
// NodeConfig it is decoded strictly and validated with every problem reported at once, each with its field path.
package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

const (
	// Group and Version of the API.
	Group   = "lb.berth.dev"
	Version = "v1alpha1"
	// APIVersion is Group/Version.
	APIVersion = Group + "/" + Version
	// Kind of the only object.
	Kind = "LoadBalancerConfig"

	// DefaultClassName is the spec.loadBalancerClass berth serves unless ClassName says otherwise.
	DefaultClassName = "berth.dev/lb"
	// PoolAnnotation on a Service names the pool its frontend IP comes from.
	PoolAnnotation = "lb.berth.dev/pool"
	// AddressAnnotation on a Service asks for one frontend IP (spec.loadBalancerIP, which Kubernetes deprecated,
	// is honoured too; when both are set they must agree).
	AddressAnnotation = "lb.berth.dev/address"

	// ModeFloatingIP keeps the frontend IP as the packets' destination (Azure's floating IP); kube-proxy on the
	// node accepts it. The default.
	ModeFloatingIP = "floatingIP"
	// ModeDNAT rewrites the destination to the node's nodeIP:nodePort.
	ModeDNAT = "dnat"
)

// LoadBalancerConfig is the load balancer's configuration.
type LoadBalancerConfig struct {
	// APIVersion is lb.berth.dev/v1alpha1.
	APIVersion string `json:"apiVersion"`
	// Kind is LoadBalancerConfig.
	Kind string `json:"kind"`
	// Spec is the configuration.
	Spec LoadBalancerConfigSpec `json:"spec"`
}

// LoadBalancerConfigSpec is what the operator decides.
type LoadBalancerConfigSpec struct {
	// ClassName is the spec.loadBalancerClass of the Services berth serves (default berth.dev/lb).
	ClassName string `json:"className,omitempty"`
	// DefaultClass makes berth also serve Services of type LoadBalancer without a loadBalancerClass, as a cloud's
	// own load balancer does. Leave it off when another implementation serves those.
	DefaultClass bool `json:"defaultClass,omitempty"`
	// Pools are where frontend IPs come from, in order: a Service without a pool annotation or a requested address
	// gets the first free address of the first pool with autoAssign. At least one.
	Pools []Pool `json:"pools"`
	// Mode is how the LB hosts send a frontend's packets to the chosen node: floatingIP (the default) keeps the
	// frontend IP as the destination and routes the packet to the node, which answers the client directly
	// (kube-proxy accepts the frontend IP: ipMode VIP), so a flow survives the move of its frontend IP to another
	// LB host; dnat rewrites the destination to nodeIP:nodePort (ipMode Proxy), and the nodes must route replies to
	// clients back through the LB host that NATed them.
	Mode string `json:"mode,omitempty"`
	// Health tunes the LB hosts' probes: kube-proxy's /healthz on every node (port 10256) for Services with
	// externalTrafficPolicy Cluster, and each Local Service's healthCheckNodePort.
	Health Health `json:"health,omitzero"`
}

// Health tunes the probes. A node or Service endpoint leaves after Threshold consecutive failed probes, so within
// Interval × Threshold, and comes back at its first success. When every candidate fails at once, none leaves: the
// load balancer fails open to what the API server reports (Ready nodes, endpoints in EndpointSlices).
type Health struct {
	// Interval between two probes of a target, and each probe's timeout (default 5s, at least 100ms).
	Interval metav1.Duration `json:"interval,omitzero"`
	// Threshold is how many consecutive failures take a target out (default 2, at most 10).
	Threshold int `json:"threshold,omitempty"`
}

// Pool is a named set of frontend addresses.
type Pool struct {
	// Name is what the lb.berth.dev/pool annotation names (a DNS label). Unique.
	Name string `json:"name"`
	// Addresses are IPv4 CIDRs ("203.0.113.0/28": every address, network and broadcast included, as a cloud's
	// public IPs are) or ranges ("203.0.113.10-203.0.113.20", both ends included). No two may overlap, in this pool
	// or another.
	Addresses []string `json:"addresses"`
	// AutoAssign lets Services that name no pool and no address get addresses from this pool (default true).
	AutoAssign *bool `json:"autoAssign,omitempty"`
}
