package host_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	lbv1 "berth.dev/berth/agent/api/lb/v1alpha1"
	"berth.dev/berth/agent/lb/announce"
	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/host"
	"berth.dev/berth/agent/lb/lbmetrics"
	"berth.dev/berth/agent/lb/lbstatus"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/lb/probe"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/lblab"
	"berth.dev/berth/test/wait"
)

// severable is an API client whose connections the test can cut, as when its host dies.
type severable struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (s *severable) client(t testing.TB, admin *rest.Config) kubernetes.Interface {
	rc := rest.CopyConfig(admin)
	inner := rc.Dial
	if inner == nil {
		inner = (&net.Dialer{}).DialContext
	}
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.cut {
			return nil, fmt.Errorf("dial %s: this host is down", addr)
		}
		c, err := inner(ctx, network, addr)
		if err == nil {
			s.conns = append(s.conns, c)
		}
		return c, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func (s *severable) sever() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = true
	for _, c := range s.conns {
		c.Close()
	}
}

// haLab is two LB hosts in floating-IP mode, with the controller, against a real apiserver, on one segment with a
// client and two nodes, serving one Service "web" whose frontend IP one host announces.
type haLab struct {
	l     *lblab.Lab
	admin *rest.Config
	ctx   context.Context
	log   *slog.Logger
	class lbsvc.Class
	wg    *sync.WaitGroup
	hosts []*lbHost
	vip   string
	ip    netip.Addr
}

type lbHost struct {
	name   string
	ns     netns.NS
	ann    *announce.Announcer
	api    *severable
	a      *applied
	reg    *prometheus.Registry
	file   string
	cancel context.CancelFunc
}

func newHALab(t testing.TB) *haLab {
	l := lblab.NewHA(t)
	cp := controlplane.ForTest(t, controlplane.Config{})
	cs := cp.Client
	ctx, cancel := context.WithCancel(context.Background())
	x := &haLab{l: l, admin: cp.Admin, ctx: ctx, log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		class: lbsvc.Class{Name: lbv1.DefaultClassName}, wg: &sync.WaitGroup{}}
	t.Cleanup(func() { cancel(); x.wg.Wait() })

	readyNode(t, cs, "node-1", lblab.HANode1)
	readyNode(t, cs, "node-2", lblab.HANode2)
	lblab.Serve(t, l.N1, "node-1", 80)
	lblab.Serve(t, l.N2, "node-2", 80)
	lblab.ServeHealth(t, l.N1, 10256)
	lblab.ServeHealth(t, l.N2, 10256)
	runController(ctx, t, x.wg, cs, x.class, x.log)
	x.hosts = []*lbHost{{name: "lb-1", ns: l.LB}, {name: "lb-2", ns: l.LB2}}
	for _, h := range x.hosts {
		x.start(t, h)
	}

	cl := x.class.Name
	if _, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: &cl, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080, Protocol: corev1.ProtocolTCP}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "web's frontend IP", func() bool {
		s, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) == 1 {
			x.vip = s.Status.LoadBalancer.Ingress[0].IP
		}
		return x.vip != ""
	})
	x.ip = netip.MustParseAddr(x.vip)
	for _, n := range []netns.NS{l.N1, l.N2} { // the node accepts the frontend IP, as kube-proxy does for ipMode VIP
		if err := n.Run("ip", "addr", "add", x.vip+"/32", "dev", "lo"); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range x.hosts {
		h.a.wait(t, "web on both nodes on "+h.name, func(fs []dataplane.Frontend) bool { return len(backends(fs, x.vip)) == 2 })
	}
	x.waitOneOwner(t)
	return x
}

// start starts (or, after kill, starts again) host h with an API client of its own.
func (x *haLab) start(t testing.TB, h *lbHost) {
	ctx, cancel := context.WithCancel(x.ctx)
	h.cancel = cancel
	h.api, h.a, h.reg, h.file = &severable{}, &applied{}, prometheus.NewRegistry(), filepath.Join(t.TempDir(), "lb-host.json")
	metrics := lbmetrics.New(h.reg)
	client := h.api.client(t, x.admin)
	hlog := x.log.With("host", h.name)
	ann, err := announce.New(announce.MembersConfig{Client: client, Identity: h.name, Log: hlog},
		announce.NewSpeaker(lblab.ARP(t, h.ns, "eth0"), hlog))
	if err != nil {
		t.Fatal(err)
	}
	h.ann = ann
	nft, routes := lblab.NFTIn(t, h.ns), lblab.NetlinkIn(t, h.ns)
	x.wg.Add(1)
	go func() {
		defer x.wg.Done()
		err := host.Run(ctx, host.Config{Client: client, Class: x.class, NFT: nft, Mode: dataplane.FloatingIP,
			Routes: routes, Announce: ann, Identity: h.name, StatusFile: h.file, Metrics: metrics, Resync: time.Hour, Applied: h.a.record, Log: hlog,
			Probe: probe.Config{Interval: 200 * time.Millisecond, Threshold: 2, Dial: h.ns.DialContext}})
		if err != nil {
			t.Errorf("%s: %v", h.name, err)
		}
	}()
}

// kill makes h die as a machine does: its link goes down and it loses the API (its Lease is no longer renewed).
func (x *haLab) kill(t testing.TB, h *lbHost) {
	if err := h.ns.Run("ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	h.api.sever()
}

// revive brings a killed h back as a new process.
func (x *haLab) revive(t testing.TB, h *lbHost) {
	h.cancel()
	if err := h.ns.Run("ip", "link", "set", "eth0", "up"); err != nil {
		t.Fatal(err)
	}
	x.start(t, h)
}

// waitOneOwner waits until both hosts see each other live and exactly one announces the frontend IP, and returns
// the owner and the other.
func (x *haLab) waitOneOwner(t testing.TB) (owner, other *lbHost) {
	wait.For(t, 15*time.Second, "one owner of "+x.vip, func() bool {
		var owners []*lbHost
		for _, h := range x.hosts {
			if slices.Contains(h.ann.Owned(), x.ip) {
				owners = append(owners, h)
			}
		}
		if len(owners) != 1 || len(x.hosts[0].ann.Live()) != 2 || len(x.hosts[1].ann.Live()) != 2 {
			return false
		}
		owner = owners[0]
		return true
	})
	other = x.hosts[0]
	if other == owner {
		other = x.hosts[1]
	}
	return owner, other
}

// The frontend IP is announced by exactly one host (the one whose MAC the client's ARP resolves it to), and
// flows spread over both nodes. Then the owner dies: its link goes down and it loses the API, so its Lease is no
// longer renewed. The other host takes the frontend IP over within a few seconds (gratuitous ARP), a TCP stream
// opened through the dead host goes on through the new one to the same node, and new connections work.
func TestHAFailover(t *testing.T) {
	x := newHALab(t)
	l, vip, ip := x.l, x.vip, x.ip
	owner, survivor := x.waitOneOwner(t)

	seen := map[string]int{}
	for range 24 {
		c, _, name := l.Dial(t, vip+":80")
		c.Close()
		seen[name]++
	}
	if seen["node-1"] == 0 || seen["node-2"] == 0 {
		t.Errorf("24 connections through %s reached %v; want both nodes", owner.name, seen)
	}
	if got, want := neighbour(t, l.Client, vip), mac(t, owner.ns); got != want {
		t.Errorf("the client resolves %s to %s; want the owner %s's %s", vip, got, owner.name, want)
	}
	kept, keptR, keptNode := l.Dial(t, vip+":80")
	defer kept.Close()
	echo := func(msg string) {
		t.Helper()
		kept.SetDeadline(time.Now().Add(30 * time.Second)) // TCP's retransmission backoff spans the move
		fmt.Fprintf(kept, "%s\n", msg)
		if line, err := keptR.ReadString('\n'); err != nil || line != msg+"\n" {
			t.Fatalf("the stream to %s: %q, %v", keptNode, line, err)
		}
	}
	echo("before")

	// The owner dies.
	x.kill(t, owner)
	died := time.Now()
	wait.For(t, 15*time.Second, survivor.name+" announcing "+vip, func() bool { return slices.Contains(survivor.ann.Owned(), ip) })
	moved := time.Since(died)
	echo("after the move")
	c, _, name := l.Dial(t, vip+":80")
	c.Close()
	if got, want := neighbour(t, l.Client, vip), mac(t, survivor.ns); got != want {
		t.Errorf("after the move the client resolves %s to %s; want %s's %s", vip, got, survivor.name, want)
	}
	t.Logf("%s moved from %s to %s %s after the owner died; the stream to %s went on; a new connection reached %s",
		vip, owner.name, survivor.name, moved.Round(10*time.Millisecond), keptNode, name)

	// The survivor's status file and metrics say what it does now.
	wait.For(t, 5*time.Second, survivor.name+"'s status", func() bool {
		st, err := lbstatus.Read(survivor.file)
		return err == nil && slices.Equal(st.Announced, []string{vip}) && slices.Equal(st.LiveHosts, []string{survivor.name}) &&
			len(st.Frontends) == 1 && len(st.Frontends[0].Backends) == 2
	})
	for metric, want := range map[string]float64{
		`berth_lb_announced{ip="` + vip + `"}`:                                     1,
		`berth_lb_live_hosts`:                                                      1,
		`berth_lb_frontend_backends{frontend="` + vip + `:80/TCP"}`:                2,
		`berth_lb_probe_down{target="http://` + lblab.HANode1 + `:10256/healthz"}`: 0,
	} {
		if got, ok := gathered(t, survivor.reg)[metric]; !ok || got != want {
			t.Errorf("%s's %s = %v (present %v), want %v", survivor.name, metric, got, ok, want)
		}
	}
}

// gathered is reg's gauges and counters by name{labels}.
func gathered(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetGauge() != nil:
				out[name] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[name] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// neighbour is the MAC ns resolves ip to.
func neighbour(t testing.TB, ns netns.NS, ip string) string {
	out, err := ns.Output("ip", "neigh", "show", ip)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "lladdr" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return ""
}

func mac(t testing.TB, ns netns.NS) string {
	out, err := ns.Output("cat", "/sys/class/net/eth0/address")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// Failover time: from killing the host that announces the frontend IP to the first connection answered through
// the other (the lease duration, 3 s, is most of it). Each iteration kills the owner and, untimed, brings it back.
func BenchmarkFailover(b *testing.B) {
	x := newHALab(b)
	for b.Loop() {
		b.StopTimer()
		owner, _ := x.waitOneOwner(b)
		b.StartTimer()
		x.kill(b, owner)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			c, err := x.l.Client.DialContext(ctx, "tcp", x.vip+":80")
			cancel()
			if err == nil {
				c.SetDeadline(time.Now().Add(time.Second))
				_, err = bufio.NewReader(c).ReadString('\n')
				c.Close()
				if err == nil {
					break
				}
			}
		}
		b.StopTimer()
		x.revive(b, owner)
		b.StartTimer()
	}
}
