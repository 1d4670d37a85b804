package frontends

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/lbsvc"
)

func node(name, ip string, ready bool, mutate func(*corev1.Node)) *corev1.Node {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
	if mutate != nil {
		mutate(n)
	}
	return n
}

func service(name, ip string, policy corev1.ServiceExternalTrafficPolicy, ports ...corev1.ServicePort) *corev1.Service {
	class := "berth.dev/lb"
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &class, ExternalTrafficPolicy: policy, Ports: ports}}
	if ip != "" {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	}
	return s
}

// Who gets flows: Ready nodes, not excluded, not being deleted, not failing their probe; Local Services only
// their nodes with local endpoints; every TCP and UDP port of a Service with a frontend IP, SCTP and (DNAT mode)
// ports without a nodePort skipped with the reason; the floating-IP mode serves a port without a nodePort.
func TestBuild(t *testing.T) {
	now := metav1.Now()
	in := Input{
		Class:     lbsvc.Class{Name: "berth.dev/lb"},
		NodePorts: true,
		Nodes: []*corev1.Node{
			node("node-1", "10.0.2.11", true, nil),
			node("node-2", "10.0.2.12", true, nil),
			node("node-3", "10.0.2.13", false, nil),
			node("node-4", "10.0.2.14", true, func(n *corev1.Node) { n.Labels = map[string]string{ExcludeLabel: ""} }),
			node("node-5", "10.0.2.15", true, func(n *corev1.Node) { n.DeletionTimestamp = &now }),
			node("node-6", "10.0.2.16", true, nil),
		},
		Unhealthy: map[string]bool{"node-6": true},
		Local:     map[string][]string{"default/local": {"node-2", "node-3"}},
		Services: []*corev1.Service{
			service("web", "203.0.113.1", corev1.ServiceExternalTrafficPolicyCluster,
				corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080},
				corev1.ServicePort{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, NodePort: 30053},
				corev1.ServicePort{Name: "sctp", Protocol: corev1.ProtocolSCTP, Port: 9, NodePort: 30009},
				corev1.ServicePort{Name: "nonodeport", Protocol: corev1.ProtocolTCP, Port: 81}),
			service("local", "203.0.113.2", corev1.ServiceExternalTrafficPolicyLocal,
				corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 31080}),
			service("pending", "", corev1.ServiceExternalTrafficPolicyCluster,
				corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 32080}),
		},
	}
	other := service("other", "203.0.113.9", corev1.ServiceExternalTrafficPolicyCluster, corev1.ServicePort{Port: 80, NodePort: 30090})
	otherClass := "example.com/lb"
	other.Spec.LoadBalancerClass = &otherClass
	in.Services = append(in.Services, other)

	fs, skipped := Build(in)
	var got []string
	for _, f := range fs {
		var bs []string
		for _, b := range f.Backends {
			bs = append(bs, b.Name)
		}
		got = append(got, fmt.Sprintf("%s:%d/%s→%d %v", f.IP, f.Port, f.Protocol, f.NodePort, bs))
	}
	want := []string{
		"203.0.113.1:80/TCP→30080 [node-1 node-2]",
		"203.0.113.1:53/UDP→30053 [node-1 node-2]",
		"203.0.113.2:80/TCP→31080 [node-2]",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("frontends:\n%v\nwant\n%v", got, want)
	}
	if len(skipped) != 2 || skipped[0].Service != "default/web" || !strings.Contains(skipped[0].Reason, "SCTP") || !strings.Contains(skipped[1].Reason, "no nodePort") {
		t.Errorf("skipped %+v", skipped)
	}
	// Every Ready node failing its probe at once: the probes are not believed; the Ready nodes keep their flows.
	in.Unhealthy = map[string]bool{"node-1": true, "node-2": true, "node-6": true}
	if fs, _ := Build(in); len(fs) != 3 || fmt.Sprint(names(fs[0].Backends)) != "[node-1 node-2 node-6]" || fmt.Sprint(names(fs[2].Backends)) != "[node-2]" {
		t.Errorf("every node unhealthy: %+v, want the Ready nodes served (fail open)", fs)
	}
	in.Unhealthy = map[string]bool{"node-1": true, "node-6": true}
	if fs, _ := Build(in); len(fs) != 3 || fmt.Sprint(names(fs[0].Backends)) != "[node-2]" {
		t.Errorf("two of three nodes unhealthy: %+v, want node-2 alone", fs)
	}
	in.Unhealthy = nil
	in.NodePorts = false
	if fs, skipped := Build(in); len(fs) != 4 || len(skipped) != 1 || fs[1].Port != 81 || fs[1].NodePort != 0 {
		t.Errorf("floating-IP mode: %d frontends (port 81 second: %+v), skipped %+v; want 4, the port without a nodePort served", len(fs), fs, skipped)
	}
}

// loadBalancerSourceRanges reach the frontends (IPv4 ones; only IPv6 ones admit no IPv4 client), and a range that
// does not parse leaves the Service unserved rather than open to all.
func TestSourceRanges(t *testing.T) {
	in := Input{Class: lbsvc.Class{Name: "berth.dev/lb"}, Nodes: []*corev1.Node{node("node-1", "10.0.2.11", true, nil)}}
	for name, ranges := range map[string][]string{"v4": {"10.0.0.0/8", "2001:db8::/32"}, "v6only": {"2001:db8::/32"}, "bad": {"10.0.0.0/8", "banana"}} {
		s := service(name, "203.0.113.1", corev1.ServiceExternalTrafficPolicyCluster, corev1.ServicePort{Port: 80, NodePort: 30080})
		s.Spec.LoadBalancerSourceRanges = ranges
		in.Services = []*corev1.Service{s}
		fs, skipped := Build(in)
		switch name {
		case "v4":
			if len(fs) != 1 || fmt.Sprint(fs[0].SourceRanges) != "[10.0.0.0/8]" {
				t.Errorf("v4: %+v", fs)
			}
		case "v6only":
			if len(fs) != 1 || fmt.Sprint(fs[0].SourceRanges) != "[0.0.0.0/32]" {
				t.Errorf("v6only: %+v", fs)
			}
		case "bad":
			if len(fs) != 1 || len(fs[0].Backends) != 0 || len(skipped) != 1 || !strings.Contains(skipped[0].Reason, "banana") {
				t.Errorf("bad: %+v, skipped %+v", fs, skipped)
			}
		}
	}
}

func names(bs []dataplane.Backend) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out
}

// FailOpen keeps the candidates that are up, or all when none is; it does not touch its input.
func TestFailOpen(t *testing.T) {
	in := []string{"a", "b", "c"}
	for _, c := range []struct {
		down []string
		want string
	}{{nil, "[a b c]"}, {[]string{"b"}, "[a c]"}, {[]string{"a", "c"}, "[b]"}, {[]string{"a", "b", "c"}, "[a b c]"}} {
		if got := FailOpen(in, func(s string) bool { return slices.Contains(c.down, s) }); fmt.Sprint(got) != c.want {
			t.Errorf("down %v: %v, want %s", c.down, got, c.want)
		}
	}
	if fmt.Sprint(in) != "[a b c]" {
		t.Errorf("input changed: %v", in)
	}
	if got := FailOpen(nil, func(string) bool { return true }); len(got) != 0 {
		t.Errorf("no candidates: %v", got)
	}
}
