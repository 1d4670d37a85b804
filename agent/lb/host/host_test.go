package host_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	lbv1 "berth.dev/berth/agent/api/lb/v1alpha1"
	"berth.dev/berth/agent/lb/controller"
	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/frontends"
	"berth.dev/berth/agent/lb/host"
	"berth.dev/berth/agent/lb/ipam"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/lb/probe"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/lblab"
	"berth.dev/berth/test/wait"
)

// applied records what the host applied, so the test waits on the table rather than on time.
type applied struct {
	mu   sync.Mutex
	last []dataplane.Frontend
	cond func([]dataplane.Frontend) bool
	ok   chan struct{}
}

func (a *applied) record(fs []dataplane.Frontend) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = fs
	if a.cond != nil && a.cond(fs) {
		a.cond = nil
		close(a.ok)
	}
}

// wait waits until an apply satisfies cond (the last one, or one to come).
func (a *applied) wait(t testing.TB, what string, cond func([]dataplane.Frontend) bool) {
	t.Helper()
	a.mu.Lock()
	if cond(a.last) {
		a.mu.Unlock()
		return
	}
	a.cond, a.ok = cond, make(chan struct{})
	ok := a.ok
	a.mu.Unlock()
	select {
	case <-ok:
	case <-time.After(30 * time.Second):
		t.Fatalf("no apply with %s; last %+v", what, a.last)
	}
}

func backends(fs []dataplane.Frontend, ip string) []string {
	for _, f := range fs {
		if f.IP.String() == ip {
			var out []string
			for _, b := range f.Backends {
				out = append(out, b.Name)
			}
			return out
		}
	}
	return nil
}

// runController runs the controller with the pool 203.0.113.1-6 (or last, if given) until ctx ends (wg waits for it).
func runController(ctx context.Context, t testing.TB, wg *sync.WaitGroup, cs kubernetes.Interface, class lbsvc.Class, log *slog.Logger, r ...ipam.Range) {
	if len(r) == 0 {
		r = []ipam.Range{{First: netip.MustParseAddr("203.0.113.1"), Last: netip.MustParseAddr("203.0.113.6")}}
	}
	pool := []ipam.Pool{{Name: "public", Ranges: r, AutoAssign: true}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := controller.Run(ctx, controller.Config{Client: cs, ClassName: class.Name, Pools: pool, Identity: "test",
			PoolAnnotation: lbv1.PoolAnnotation, AddressAnnotation: lbv1.AddressAnnotation, Log: log}); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
}

// keepReady renews the nodes' Ready heartbeat every 10 s until ctx ends, as their kubelets would (these nodes have
// none): a test that runs longer than the node monitor's grace period (50 s) would otherwise see them NotReady.
func keepReady(ctx context.Context, cs kubernetes.Interface, names ...string) {
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, name := range names {
				retry.RetryOnConflict(retry.DefaultRetry, func() error {
					n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
					if err != nil {
						return err
					}
					for i := range n.Status.Conditions {
						if n.Status.Conditions[i].Type == corev1.NodeReady {
							n.Status.Conditions[i].LastHeartbeatTime = metav1.Now()
						}
					}
					_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
					return err
				})
			}
		}
	}()
}

func readyNode(t testing.TB, cs kubernetes.Interface, name, ip string) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // the controller manager updates Nodes too
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The LB host with the controller against a real apiserver, and real traffic through namespaces: two Services get
// distinct frontend IPs and each answers from the client through its nodePort on the nodes; a node labelled
// exclude-from-external-load-balancers takes no new flows; a Local Service goes only to the node with its
// endpoint. The nodes are namespaces with TCP servers (no kubelet): their Node objects are made Ready by hand.
func TestLBHost(t *testing.T) {
	l := lblab.New(t)
	cp := controlplane.ForTest(t, controlplane.Config{})
	cs := cp.Client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	class := lbsvc.Class{Name: lbv1.DefaultClassName}

	readyNode(t, cs, "node-1", "10.0.2.11")
	readyNode(t, cs, "node-2", "10.0.2.12")
	for port, suffix := range map[int]string{30080: "", 30081: "/local", 30082: "/api"} {
		lblab.Serve(t, l.N1, "node-1"+suffix, port)
		lblab.Serve(t, l.N2, "node-2"+suffix, port)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	runController(ctx, t, &wg, cs, class, log)
	wg.Add(1)
	a := &applied{}
	proxy1 := lblab.ServeHealth(t, l.N1, 10256) // kube-proxy's /healthz
	lblab.ServeHealth(t, l.N2, 10256)
	go func() {
		defer wg.Done()
		if err := host.Run(ctx, host.Config{Client: cs, Class: class, NFT: l.NFT(t), Mode: dataplane.DNAT, Resync: time.Second, Applied: a.record, Log: log,
			Probe: probe.Config{Interval: 200 * time.Millisecond, Threshold: 2, Dial: l.LB.DialContext}}); err != nil {
			t.Errorf("host: %v", err)
		}
	}()

	svc := func(name string, nodePort int32, policy corev1.ServiceExternalTrafficPolicy, selector map[string]string) {
		t.Helper()
		cl := class.Name
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &cl, ExternalTrafficPolicy: policy, Selector: selector,
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: nodePort, Protocol: corev1.ProtocolTCP}}}}
		if _, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// ipOf waits for the controller to give the Service its frontend IP.
	ipOf := func(name string) string {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
			if err == nil && len(s.Status.LoadBalancer.Ingress) == 1 {
				return s.Status.LoadBalancer.Ingress[0].IP
			}
		}
		t.Fatalf("%s got no frontend IP", name)
		return ""
	}
	svc("web", 30080, corev1.ServiceExternalTrafficPolicyCluster, map[string]string{"app": "web"})
	svc("api", 30082, corev1.ServiceExternalTrafficPolicyCluster, map[string]string{"app": "api"})
	web, api := ipOf("web"), ipOf("api")
	if web == api {
		t.Fatalf("web and api share %s", web)
	}
	a.wait(t, "web and api on both nodes", func(fs []dataplane.Frontend) bool {
		return len(backends(fs, web)) == 2 && len(backends(fs, api)) == 2
	})
	reach := func(addr string, want ...string) {
		t.Helper()
		seen := map[string]bool{}
		for range 24 {
			c, _, name := l.Dial(t, addr)
			c.Close()
			seen[name] = true
		}
		if len(seen) != len(want) {
			t.Errorf("%s reached %v, want %v", addr, seen, want)
		}
		for _, w := range want {
			if !seen[w] {
				t.Errorf("%s never reached %s (reached %v)", addr, w, seen)
			}
		}
	}
	reach(web+":80", "node-1", "node-2")
	reach(api+":80", "node-1/api", "node-2/api")

	// node-2 excluded by label: new flows go to node-1 only.
	exclude := func(on bool) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error { // the controller manager updates Nodes too
			n, err := cs.CoreV1().Nodes().Get(ctx, "node-2", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			delete(n.Labels, frontends.ExcludeLabel)
			if on {
				n.Labels[frontends.ExcludeLabel] = "true"
			}
			_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	exclude(true)
	a.wait(t, "node-2 excluded", func(fs []dataplane.Frontend) bool {
		b := backends(fs, web)
		return len(b) == 1 && b[0] == "node-1"
	})
	reach(web+":80", "node-1")
	exclude(false)

	// A Local Service without a selector, its one endpoint on node-2 (an EndpointSlice written by hand, as for
	// endpoints outside the cluster's pods): only node-2 takes its flows.
	svc("local", 30081, corev1.ServiceExternalTrafficPolicyLocal, nil)
	ready, node := true, "node-2"
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "local-1", Namespace: "default",
		Labels: map[string]string{discoveryv1.LabelServiceName: "local"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: &node, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}}}
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	local := ipOf("local")
	lsvc, err := cs.CoreV1().Services("default").Get(ctx, "local", metav1.GetOptions{})
	if err != nil || lsvc.Spec.HealthCheckNodePort == 0 {
		t.Fatalf("local has no healthCheckNodePort: %v", err)
	}
	hc2 := lblab.ServeHealth(t, l.N2, int(lsvc.Spec.HealthCheckNodePort))
	hc1 := lblab.ServeHealth(t, l.N1, int(lsvc.Spec.HealthCheckNodePort))
	a.wait(t, "local on node-2 only", func(fs []dataplane.Frontend) bool {
		b := backends(fs, local)
		return len(b) == 1 && b[0] == "node-2" && len(backends(fs, web)) == 2
	})
	reach(local+":80", "node-2/local")
	reach(web+":80", "node-1", "node-2")

	// Probes: node-1's kube-proxy fails its /healthz → node-1 leaves the Cluster Services within interval ×
	// threshold, and comes back at its first success.
	proxy1.Set(http.StatusServiceUnavailable)
	a.wait(t, "node-1 out after failed probes", func(fs []dataplane.Frontend) bool { b := backends(fs, web); return len(b) == 1 && b[0] == "node-2" })
	reach(web+":80", "node-2")
	proxy1.Set(http.StatusOK)
	a.wait(t, "node-1 back", func(fs []dataplane.Frontend) bool { return len(backends(fs, web)) == 2 })
	// The Local Service gets a second endpoint, on node-1; node-2's healthCheckNodePort answers 503 (no local
	// endpoint, as kube-proxy says before the EndpointSlice catches up): node-2 leaves the Service.
	one := "node-1"
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.0.5"}, NodeName: &one, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.wait(t, "local on both nodes", func(fs []dataplane.Frontend) bool { return len(backends(fs, local)) == 2 })
	hc2.Set(http.StatusServiceUnavailable)
	a.wait(t, "local off node-2 after its failed probes", func(fs []dataplane.Frontend) bool {
		b := backends(fs, local)
		return len(b) == 1 && b[0] == "node-1"
	})
	// Both nodes' probes fail while the EndpointSlice lists both: the probes are not believed (fail open, as
	// AWS's and Google's load balancers do); the Service keeps its nodes rather than dropping every flow.
	hc1.Set(http.StatusServiceUnavailable)
	a.wait(t, "local failed open on both nodes", func(fs []dataplane.Frontend) bool { return len(backends(fs, local)) == 2 })
	// The endpoints gone from the API too: the Service has no backend left, and its frontend takes no new flows.
	if err := cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, slice.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.wait(t, "local drained", func(fs []dataplane.Frontend) bool {
		return len(backends(fs, local)) == 0 && len(backends(fs, web)) == 2
	})

	// Drift: the table deleted by hand comes back with the next resync (changes go in as element changes, which
	// would not restore it).
	nft := l.NFT(t)
	nft.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: dataplane.TableName})
	if err := nft.Flush(); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the table back after a resync", func() bool {
		tables, err := nft.ListTablesOfFamily(nftables.TableFamilyIPv4)
		return err == nil && slices.ContainsFunc(tables, func(tb *nftables.Table) bool { return tb.Name == dataplane.TableName })
	})
	reach(web+":80", "node-1", "node-2")
}
