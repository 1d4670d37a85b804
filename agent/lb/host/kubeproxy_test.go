package host_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	lbv1 "berth.dev/berth/agent/api/lb/v1alpha1"
	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/frontends"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/lb/maglev"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/lblab"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
)

// kube-proxy's own nftables sync beside berth's for the same Services, in one run: 10,000 Services of type
// LoadBalancer (frontend IPs in their status, ipMode VIP) over 3 nodes, each with an EndpointSlice of 3 ready
// endpoints. kube-proxy (the pinned build, nftables mode, in a namespace of its own with the control plane) reports
// its first full sync and then the sync for one new Service ("SyncProxyRules complete", at -v=2); berth's LB host
// does the same work (frontends from the objects, the table built, applied over netlink; one new Service as element
// changes) into its own table in the same namespace. Both time only the sync, not the informers' initial list.
// Run with -benchtime 1x: one op is the whole comparison.
func BenchmarkSyncBesideKubeProxy(b *testing.B) {
	tier.Require(b, tier.Root, tier.NetNS, tier.Kubernetes, tier.NFT)
	const services = 10000
	ns, err := netns.Create(fmt.Sprintf("blbk%d", os.Getpid()%100000))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ns.Delete() })
	if err := ns.Run("ip", "link", "set", "lo", "up"); err != nil {
		b.Fatal(err)
	}
	cp := controlplane.ForTest(b, controlplane.Config{NetNS: ns.Path()})
	rc := rest.CopyConfig(cp.Admin)
	rc.QPS, rc.Burst = 2000, 4000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 1; i <= 3; i++ {
		readyNode(b, cs, fmt.Sprintf("node-%d", i), fmt.Sprintf("10.0.2.%d", 10+i))
	}
	class := lbsvc.Class{Name: lbv1.DefaultClassName}
	create := func(i int) error {
		cl, noNodePorts, ready := class.Name, false, true
		name := fmt.Sprintf("s-%d", i)
		svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &cl, AllocateLoadBalancerNodePorts: &noNodePorts,
				Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}},
			metav1.CreateOptions{})
		if err != nil {
			return err
		}
		vip := corev1.LoadBalancerIPModeVIP
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: fmt.Sprintf("10.200.%d.%d", i/250, 1+i%250), IPMode: &vip}}
		if _, err := cs.CoreV1().Services("default").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			return err
		}
		port, proto := int32(8080), corev1.ProtocolTCP
		var eps []discoveryv1.Endpoint
		for n := 1; n <= 3; n++ {
			node := fmt.Sprintf("node-%d", n)
			eps = append(eps, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.%d", n, 2+i%250)}, NodeName: &node,
				Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		}
		_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4, Endpoints: eps, Ports: []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}}}, metav1.CreateOptions{})
		return err
	}
	start := time.Now()
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := create(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range services {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.Logf("%d Services with status and EndpointSlices created in %v", services, time.Since(start).Round(time.Second))

	// kube-proxy, nftables mode, as a node's (node-1).
	dir := b.TempDir()
	config := filepath.Join(dir, "kube-proxy.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: %s, qps: 1000, burst: 2000}
hostnameOverride: node-1
clusterCIDR: 10.244.0.0/16
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack: {maxPerCore: 0}
nftables: {syncPeriod: 1h}
`, cp.KubeconfigPath())), 0o644); err != nil {
		b.Fatal(err)
	}
	reg := proc.DefaultRegistry(nil)
	group := &proc.Group{Registry: reg, Dir: dir}
	kp, err := group.Start("kube-proxy", "nsenter", "--net="+ns.Path(), "--", filepath.Join(toolbin.Kubernetes.ForTest(b), "kube-proxy"), "--config", config, "--v=2")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kp.Stop(10 * time.Second) })
	syncs := func() []time.Duration {
		data, _ := os.ReadFile(group.LogPath("kube-proxy"))
		var out []time.Duration
		for _, m := range regexp.MustCompile(`"SyncProxyRules complete" ipFamily="IPv4" elapsed="([^"]+)"`).FindAllSubmatch(data, -1) {
			if d, err := time.ParseDuration(string(m[1])); err == nil {
				out = append(out, d)
			}
		}
		return out
	}
	waitSyncs := func(n int) []time.Duration {
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
			if s := syncs(); len(s) >= n {
				return s
			}
			if time.Now().After(deadline) {
				b.Fatalf("kube-proxy did not complete %d syncs in 5 minutes; log tail:\n%s", n, proc.Tail(group.LogPath("kube-proxy"), 30))
			}
		}
	}
	first := waitSyncs(1)

	// berth, the same objects: frontends, table, apply, into its own table in the same namespace.
	svcs, err := cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	in := frontends.Input{Class: class} // floating IP: no nodePorts needed, as for kube-proxy's ipMode VIP
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	for i := range nodes.Items {
		// Ready, as a node with a kubelet would be (these have none: the node lifecycle controller has marked them
		// NotReady while the Services were created; kube-proxy does not look).
		n := &nodes.Items[i]
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		in.Nodes = append(in.Nodes, n)
	}
	nft := lblab.NFTIn(b, ns)
	marks := dataplane.NewMarks()
	// apply is the LB host's sync of fs: marks, table, and a full apply (prev nil) or element changes.
	apply := func(fs []dataplane.Frontend, prev *dataplane.Table) dataplane.Table {
		var ips []netip.Addr
		for _, n := range in.Nodes {
			ips = append(ips, netip.MustParseAddr(n.Status.Addresses[0].Address))
		}
		if err := marks.Update(ips); err != nil {
			b.Fatal(err)
		}
		t, err := dataplane.Build(fs, maglev.DefaultSize, dataplane.FloatingIP, marks)
		if err == nil && prev == nil {
			err = dataplane.Apply(nft, t, maglev.DefaultSize)
		} else if err == nil {
			_, err = dataplane.ApplyChanges(nft, *prev, t, maglev.DefaultSize)
		}
		if err != nil {
			b.Fatal(err)
		}
		return t
	}
	b.ResetTimer()
	for b.Loop() {
		startFull := time.Now()
		fs, _ := frontends.Build(in)
		if len(fs) != services {
			b.Fatalf("%d frontends, want %d", len(fs), services)
		}
		full := apply(fs, nil)
		berthFull := time.Since(startFull)

		// One new Service.
		before := len(syncs())
		if err := create(services); err != nil {
			b.Fatal(err)
		}
		s, err := cs.CoreV1().Services("default").Get(ctx, fmt.Sprintf("s-%d", services), metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		startOne := time.Now()
		in.Services = append(in.Services, s)
		fs, _ = frontends.Build(in)
		apply(fs, &full)
		berthOne := time.Since(startOne)
		after := waitSyncs(before + 1)
		b.ReportMetric(float64(first[0].Milliseconds()), "kube-proxy-full-ms")
		b.ReportMetric(float64(berthFull.Milliseconds()), "berth-full-ms")
		b.ReportMetric(float64(after[before].Microseconds())/1000, "kube-proxy-one-ms")
		b.ReportMetric(float64(berthOne.Microseconds())/1000, "berth-one-ms")
		in.Services = in.Services[:services]
		_ = cs.CoreV1().Services("default").Delete(ctx, s.Name, metav1.DeleteOptions{})
		_ = cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, s.Name+"-1", metav1.DeleteOptions{})
	}
}
