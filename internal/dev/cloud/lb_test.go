package cloud_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"berth.dev/berth/agent/lb/lbstatus"
	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/wait"
)

// The cloud's load balancer without guests (fast): StartLB runs the controller and two LB hosts from the agent
// binary in their namespaces on the bridge; a Service of type LoadBalancer without a class gets a frontend IP
// from the pool; both hosts see each other live and exactly one announces the IP, which the client namespace's ARP
// resolves to that host's MAC; Down stops the processes and removes every namespace. Traffic to pods through
// real kube-proxy is TestCloudUpStatusDown's (cmd/berth-dev), with guests.
func TestCloudLB(t *testing.T) {
	tier.Require(t, tier.Root, tier.NetNS, tier.Kubernetes)
	agent := toolbin.Agent(t)
	dir := t.TempDir()
	image := filepath.Join(dir, "no-guests.qcow2") // no guest boots from it
	if err := os.WriteFile(image, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg := proc.DefaultRegistry(log)
	c, err := cloud.Up(ctx, cloud.Config{Name: fmt.Sprintf("l%d", os.Getpid()%100000), Dir: filepath.Join(dir, "cloud"),
		BinDir: toolbin.Kubernetes.ForTest(t), Image: image, Registry: &reg, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	down := false
	t.Cleanup(func() {
		if t.Failed() && c.LB != nil {
			for _, name := range []string{"lb-controller", "lb-1", "lb-2"} {
				t.Logf("--- %s log (tail):\n%s", name, proc.Tail(filepath.Join(c.LB.Dir, "logs", name+".log"), 20))
			}
		}
		if !down {
			c.Down()
		}
	})
	l, err := c.StartLB(ctx, cloud.LBConfig{Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	// The controller and the hosts run as their own ServiceAccounts (deploy/lb-rbac.yaml), their tokens in 0600 files.
	for _, sa := range []string{"berth-lb-controller", "berth-lb-host"} {
		fi, err := os.Stat(filepath.Join(l.Dir, sa+".kubeconfig"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s's kubeconfig: %v, mode %v; want 0600", sa, err, fi.Mode().Perm())
		}
	}
	cs := c.CP.Client
	if _, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var vip string
	wait.For(t, time.Minute, "a frontend IP for web", func() bool {
		s, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) == 1 {
			vip = s.Status.LoadBalancer.Ingress[0].IP
		}
		return vip != ""
	})
	if vip != "10.89.0.1" {
		t.Errorf("frontend IP %s, want 10.89.0.1: the first of the pool 10.89.0.0/28 without its network address", vip)
	}
	var owner int
	wait.For(t, 30*time.Second, "one of two live LB hosts announcing "+vip, func() bool {
		owners := 0
		for i := 1; i <= 2; i++ {
			st, err := lbstatus.Read(l.StatusFile(i))
			if err != nil || !slices.Equal(st.LiveHosts, []string{"lb-1", "lb-2"}) {
				return false
			}
			if slices.Contains(st.Announced, vip) {
				owners++
				owner = i
			}
		}
		return owners == 1
	})
	// The client asks by ARP (a connection attempt; nothing serves the frontend here) and gets the owner's MAC.
	l.Client.Run("sh", "-c", "timeout 1 bash -c 'echo > /dev/tcp/"+vip+"/80' || true")
	mac, err := l.Hosts[owner-1].Output("cat", "/sys/class/net/eth0/address")
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the client's ARP entry for "+vip, func() bool {
		out, _ := l.Client.Output("ip", "neigh", "show", vip)
		return strings.Contains(out, strings.TrimSpace(mac))
	})

	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	down = true
	for _, ns := range append([]string{c.NS.Name, l.Client.Name}, l.Hosts[0].Name, l.Hosts[1].Name) {
		if _, err := os.Stat("/run/netns/" + ns); !os.IsNotExist(err) {
			t.Errorf("namespace %s left after Down", ns)
		}
	}
	recs, _, err := reg.Records()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Group == l.Dir && r.Running() {
			t.Errorf("%s still running after Down", r.Name)
		}
	}
}
