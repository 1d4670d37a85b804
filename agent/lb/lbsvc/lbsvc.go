// Package lbsvc is what the load balancer's controller and data plane agree on about a Service: whether berth
// serves it, and what of a Service it cannot serve.
package lbsvc

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Class is the load-balancer class berth serves and whether it also serves Services without a class.
type Class struct {
	Name    string
	Default bool
}

// Serves reports whether svc is a LoadBalancer Service of this class.
func (c Class) Serves(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return c.Default
	}
	return *svc.Spec.LoadBalancerClass == c.Name
}

// Key is the Service's namespace/name.
func Key(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

// PortProblem says why the data plane cannot serve port p, or "" when it can: only TCP and UDP are balanced, and
// in DNAT mode (nodePorts) a port needs its nodePort (allocateLoadBalancerNodePorts: false leaves it without).
func PortProblem(p corev1.ServicePort, nodePorts bool) string {
	switch p.Protocol {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, "":
	default:
		return fmt.Sprintf("port %s: protocol %s is not supported (TCP and UDP are)", portName(p), p.Protocol)
	}
	if p.NodePort == 0 && nodePorts {
		return fmt.Sprintf("port %s: no nodePort (allocateLoadBalancerNodePorts: false needs the floating-IP mode)", portName(p))
	}
	return ""
}

func portName(p corev1.ServicePort) string {
	if p.Name != "" {
		return fmt.Sprintf("%s (%d)", p.Name, p.Port)
	}
	return strconv.Itoa(int(p.Port))
}

// SourceRanges are the Service's loadBalancerSourceRanges as prefixes, or the problem with the first that is not a
// CIDR (the apiserver validates them; one that still fails must close the frontend, never open it to all).
func SourceRanges(svc *corev1.Service) ([]netip.Prefix, string) {
	var out []netip.Prefix
	for i, r := range svc.Spec.LoadBalancerSourceRanges {
		p, err := netip.ParsePrefix(strings.TrimSpace(r))
		if err != nil {
			return nil, fmt.Sprintf("spec.loadBalancerSourceRanges[%d]: %q is not a CIDR; the Service is not served", i, r)
		}
		out = append(out, p)
	}
	return out, ""
}

// Problems are what the data plane will not serve of svc (each a sentence naming the field), for the controller
// to report: the same checks the data plane applies.
func Problems(svc *corev1.Service, nodePorts bool) []string {
	var out []string
	if _, p := SourceRanges(svc); p != "" {
		out = append(out, p)
	}
	for _, port := range svc.Spec.Ports {
		if p := PortProblem(port, nodePorts); p != "" {
			out = append(out, p)
		}
	}
	return out
}
