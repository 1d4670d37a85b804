package host_test

import (
	"bufio"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	lbv1 "berth.dev/berth/agent/api/lb/v1alpha1"
	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/host"
	"berth.dev/berth/agent/lb/ipam"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/lb/probe"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/lblab"
)

// Service created → frontend serving: each op creates a Service of type LoadBalancer (its nodePort already served
// on both nodes, as kube-proxy would) and times until a connection from the client through its frontend IP is
// answered: the controller's allocation and status write, the LB host's informer, debounce (100 ms) and apply.
// It waits on the host's Applied callback, then checks with one connection (no polling error in the figure).
// Services accumulate, so the table grows to b.N frontends. Reports the median and the 99th percentile.
func BenchmarkServiceToServing(b *testing.B) {
	l := lblab.New(b)
	if err := l.Client.Run("ip", "route", "add", "10.200.0.0/20", "via", "10.0.1.1"); err != nil {
		b.Fatal(err)
	}
	cp := controlplane.ForTest(b, controlplane.Config{})
	cs := cp.Client
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	class := lbsvc.Class{Name: lbv1.DefaultClassName}
	readyNode(b, cs, "node-1", "10.0.2.11")
	readyNode(b, cs, "node-2", "10.0.2.12")
	keepReady(ctx, cs, "node-1", "node-2")
	lblab.ServeHealth(b, l.N1, 10256)
	lblab.ServeHealth(b, l.N2, 10256)
	runController(ctx, b, &wg, cs, class, log, ipam.Range{First: netip.MustParseAddr("10.200.0.1"), Last: netip.MustParseAddr("10.200.15.254")})
	a := &applied{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := host.Run(ctx, host.Config{Client: cs, Class: class, NFT: l.NFT(b), Mode: dataplane.DNAT, Resync: time.Hour, Log: log, Applied: a.record,
			Probe: probe.Config{Interval: time.Second, Threshold: 2, Dial: l.LB.DialContext}}); err != nil {
			b.Errorf("host: %v", err)
		}
	}()
	if b.N > 2700 {
		b.Fatalf("%d Services: more than the nodePort range holds", b.N)
	}
	cl := class.Name
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		port := 30000 + i
		lblab.Serve(b, l.N1, "node-1", port)
		lblab.Serve(b, l.N2, "node-2", port)
		b.StartTimer()
		start := time.Now()
		svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{GenerateName: "s-", Namespace: "default"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &cl, Selector: map[string]string{"app": "x"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: int32(port), Protocol: corev1.ProtocolTCP}}}}, metav1.CreateOptions{})
		if err != nil {
			b.Fatal(err)
		}
		// The host's apply that holds the new frontend (Services accumulate: frontend i+1), then one connection
		// through it, which must be answered.
		a.wait(b, "the new frontend applied", func(fs []dataplane.Frontend) bool { return len(fs) == i+1 })
		s, err := cs.CoreV1().Services("default").Get(ctx, svc.Name, metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) != 1 {
			b.Fatalf("Service %s applied without its frontend IP in its status (%v)", svc.Name, err)
		}
		if vip := s.Status.LoadBalancer.Ingress[0].IP; !answered(l, vip+":80") {
			b.Fatalf("Service %s: its frontend %s is applied but does not answer", svc.Name, vip)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Milliseconds()), "p99-ms")
}

// answered is whether a connection from the client to addr gets a node's greeting within 1 s.
func answered(l *lblab.Lab, addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := l.Client.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	_, err = bufio.NewReader(c).ReadString('\n')
	return err == nil
}
