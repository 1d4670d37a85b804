package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	lbv1 "berth.dev/berth/agent/api/lb/v1alpha1"
	"berth.dev/berth/agent/lb/controller"
	"berth.dev/berth/agent/lb/ipam"
	"berth.dev/berth/test/controlplane"
)

const class = lbv1.DefaultClassName

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// startController runs a controller candidate until the test ends (or stop is called) and returns stop, which waits
// for Run to return and gives its error.
func startController(t *testing.T, cs kubernetes.Interface, identity string, pools []ipam.Pool) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controller.Run(ctx, controller.Config{Client: cs, ClassName: class, Pools: pools, Identity: identity,
			PoolAnnotation: lbv1.PoolAnnotation, AddressAnnotation: lbv1.AddressAnnotation,
			LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond,
			Log: slog.New(slog.NewTextHandler(os.Stderr, nil)).With("identity", identity)})
	}()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("controller %s did not stop", identity)
		}
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return stop
}

func lbService(name string, mutate func(*corev1.Service)) *corev1.Service {
	cl := class
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &cl,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
	if mutate != nil {
		mutate(s)
	}
	return s
}

// waitService polls the Service until ok accepts it (every 100 ms, for at most 30 s).
func waitService(t *testing.T, cs kubernetes.Interface, name, what string, ok func(*corev1.Service) bool) *corev1.Service {
	t.Helper()
	var last *corev1.Service
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s, err := cs.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && ok(s) {
			return s
		}
		last = s
	}
	t.Fatalf("service %s: %s: never; last %+v", name, what, last.Status)
	return nil
}

func ingressIP(s *corev1.Service) string {
	if len(s.Status.LoadBalancer.Ingress) != 1 {
		return ""
	}
	return s.Status.LoadBalancer.Ingress[0].IP
}

func hasIP(ip string) func(*corev1.Service) bool {
	return func(s *corev1.Service) bool { return ingressIP(s) == ip }
}

func refused(reason string) func(*corev1.Service) bool {
	return func(s *corev1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, controller.ConditionType)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason
	}
}

// warning waits for a Warning Event with reason on the Service, and returns its message.
func warning(t *testing.T, cs kubernetes.Interface, name, reason string) string {
	t.Helper()
	sel := fields.Set{"involvedObject.name": name, "reason": reason, "type": corev1.EventTypeWarning}.AsSelector().String()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		evs, err := cs.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: sel})
		if err == nil && len(evs.Items) > 0 {
			return evs.Items[0].Message
		}
	}
	t.Fatalf("no Warning Event %s for %s", reason, name)
	return ""
}

// The controller against a real apiserver: distinct frontend IPs per Service with ipMode VIP and the condition;
// other classes left alone; an address asked for honoured; every refusal an Event and a condition naming the
// cause, never a stolen IP; release on deletion and on a type change; a restart and a failover keep every IP.
func TestController(t *testing.T) {
	// Dual-stack Services, so that a Service may ask for IPv6 only.
	cp := controlplane.ForTest(t, controlplane.Config{ServiceCIDRv6: netip.MustParsePrefix("fd00:10:96::/112")})
	cs := cp.Client
	ctx := context.Background()
	pools := []ipam.Pool{
		{Name: "public", Ranges: []ipam.Range{{First: addr("203.0.113.1"), Last: addr("203.0.113.3")}}, AutoAssign: true},
		{Name: "reserved", Ranges: []ipam.Range{{First: addr("198.51.100.7"), Last: addr("198.51.100.7")}}},
	}
	stopA := startController(t, cs, "a", pools)
	create := func(s *corev1.Service) {
		t.Helper()
		if _, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// web has an SCTP port besides its TCP one: it gets its IP, and the port the LB hosts cannot serve is named in
	// a Warning Event and the ports condition.
	create(lbService("web", func(s *corev1.Service) {
		s.Spec.Ports[0].Name = "http"
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "assoc", Port: 9899, Protocol: corev1.ProtocolSCTP})
	}))
	web := waitService(t, cs, "web", "an ingress IP", hasIP("203.0.113.1"))
	waitService(t, cs, "web", "PortNotServed", func(s *corev1.Service) bool {
		c := meta.FindStatusCondition(s.Status.Conditions, controller.PortsConditionType)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == controller.ReasonPortNotServed
	})
	if m := warning(t, cs, "web", controller.ReasonPortNotServed); !strings.Contains(m, "port assoc (9899): protocol SCTP") {
		t.Errorf("PortNotServed event %q does not name the port and its protocol", m)
	}
	if m := web.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != corev1.LoadBalancerIPModeVIP {
		t.Errorf("ipMode %v, want VIP", m)
	}
	if c := meta.FindStatusCondition(web.Status.Conditions, controller.ConditionType); c == nil || c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "203.0.113.1") {
		t.Errorf("condition %+v", c)
	}
	create(lbService("api", nil))
	if api := waitService(t, cs, "api", "the next IP", hasIP("203.0.113.2")); meta.FindStatusCondition(api.Status.Conditions, controller.PortsConditionType) != nil {
		t.Errorf("api, all of it served, has a ports condition: %+v", api.Status.Conditions)
	}
	// A dual-stack Service whose first family is IPv6 gets an IPv4 frontend (the one it asks for).
	create(lbService("pinned", func(s *corev1.Service) {
		s.Annotations = map[string]string{lbv1.AddressAnnotation: "198.51.100.7"}
		policy := corev1.IPFamilyPolicyPreferDualStack
		s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = &policy, []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
	}))
	waitService(t, cs, "pinned", "the address it asked for", hasIP("198.51.100.7"))

	// Refusals: another Service asking for a held address, an address in no pool, an unknown pool, a bad
	// annotation, and the auto-assign pool running out. None of them takes an address.
	create(lbService("thief", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "203.0.113.1" }))
	waitService(t, cs, "thief", "AddressInUse", refused("AddressInUse"))
	if m := warning(t, cs, "thief", "AddressInUse"); !strings.Contains(m, "default/web") {
		t.Errorf("AddressInUse event %q does not name the holder", m)
	}
	create(lbService("outside", func(s *corev1.Service) { s.Annotations = map[string]string{lbv1.AddressAnnotation: "192.0.2.1"} }))
	waitService(t, cs, "outside", "AddressNotInPool", refused("AddressNotInPool"))
	create(lbService("nopool", func(s *corev1.Service) { s.Annotations = map[string]string{lbv1.PoolAnnotation: "gold"} }))
	waitService(t, cs, "nopool", "UnknownPool", refused("UnknownPool"))
	create(lbService("garbled", func(s *corev1.Service) { s.Annotations = map[string]string{lbv1.AddressAnnotation: "not-an-ip"} }))
	waitService(t, cs, "garbled", "InvalidAnnotation", refused(controller.ReasonInvalidAnnotation))
	if m := warning(t, cs, "garbled", controller.ReasonInvalidAnnotation); !strings.Contains(m, lbv1.AddressAnnotation) {
		t.Errorf("InvalidAnnotation event %q does not name the annotation", m)
	}
	// An IPv6-only Service is refused, naming the field, and takes no address.
	create(lbService("v6only", func(s *corev1.Service) {
		policy := corev1.IPFamilyPolicySingleStack
		s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = &policy, []corev1.IPFamily{corev1.IPv6Protocol}
	}))
	waitService(t, cs, "v6only", "IPFamilyNotSupported", refused(controller.ReasonIPFamilyNotSupported))
	if m := warning(t, cs, "v6only", controller.ReasonIPFamilyNotSupported); !strings.Contains(m, "spec.ipFamilies: [IPv6]") {
		t.Errorf("IPFamilyNotSupported event %q does not name the field", m)
	}
	create(lbService("third", nil))
	waitService(t, cs, "third", "the last IP", hasIP("203.0.113.3"))
	create(lbService("fourth", nil))
	waitService(t, cs, "fourth", "PoolExhausted", refused("PoolExhausted"))

	// Another class, and no class (DefaultClass is off), are left alone.
	create(lbService("other", func(s *corev1.Service) { other := "example.com/other"; s.Spec.LoadBalancerClass = &other }))
	create(lbService("classless", func(s *corev1.Service) { s.Spec.LoadBalancerClass = nil }))

	// Deleting a Service frees its IP for the one waiting (the exhausted one is retried with backoff).
	if err := cs.CoreV1().Services("default").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitService(t, cs, "fourth", "the freed IP", hasIP("203.0.113.2"))
	// A type change to ClusterIP releases the IP and clears the status.
	third := waitService(t, cs, "third", "its IP", hasIP("203.0.113.3"))
	third.Spec.Type, third.Spec.LoadBalancerClass = corev1.ServiceTypeClusterIP, nil
	third.Spec.Ports[0].NodePort = 0
	if _, err := cs.CoreV1().Services("default").Update(ctx, third, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitService(t, cs, "third", "its status cleared", func(s *corev1.Service) bool {
		return len(s.Status.LoadBalancer.Ingress) == 0 && meta.FindStatusCondition(s.Status.Conditions, controller.ConditionType) == nil
	})

	// Restart: a new controller restores before it assigns. A Service created while none runs gets the free IP,
	// not one a live Service holds.
	if err := stopA(); err != nil {
		t.Fatalf("controller a: %v", err)
	}
	create(lbService("late", nil))
	stopB := startController(t, cs, "b", pools)
	waitService(t, cs, "late", "the free IP", hasIP("203.0.113.3"))
	for name, ip := range map[string]string{"web": "203.0.113.1", "fourth": "203.0.113.2", "pinned": "198.51.100.7"} {
		waitService(t, cs, name, "its IP kept across the restart", hasIP(ip))
	}

	// Failover: a second candidate waits while b leads; when b stops (releasing the lease) c takes over, keeps
	// every IP, and serves new work.
	startController(t, cs, "c", pools)
	holder := func() string {
		lease, err := cs.CoordinationV1().Leases(metav1.NamespaceSystem).Get(ctx, controller.Component, metav1.GetOptions{})
		if err != nil || lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}
	if h := holder(); h != "b" {
		t.Fatalf("lease holder %q, want b", h)
	}
	if err := stopB(); err != nil {
		t.Fatalf("controller b: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); holder() != "c"; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("c never took the lease (holder %q)", holder())
		}
	}
	if err := cs.CoreV1().Services("default").Delete(ctx, "fourth", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	create(lbService("newcomer", nil))
	waitService(t, cs, "newcomer", "the IP freed after the failover", hasIP("203.0.113.2"))
	for name, ip := range map[string]string{"web": "203.0.113.1", "late": "203.0.113.3", "pinned": "198.51.100.7"} {
		waitService(t, cs, name, "its IP kept across the failover", hasIP(ip))
	}
	for _, s := range []string{"other", "classless"} {
		got, _ := cs.CoreV1().Services("default").Get(ctx, s, metav1.GetOptions{})
		if len(got.Status.LoadBalancer.Ingress) != 0 || len(got.Status.Conditions) != 0 {
			t.Errorf("%s (not berth's class) was touched: %+v", s, got.Status)
		}
	}
}
