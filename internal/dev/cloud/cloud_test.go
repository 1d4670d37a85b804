package cloud_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/controlplane"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/nodeimage"
	"berth.dev/berth/test/podwait"
	"berth.dev/berth/test/toolbin"
)

// Two guests boot from the baked image onto the cloud's bridge, one at a time (two cores), with static addresses
// from cloud-init/'s network-config template and their NodeConfigs from its user-data template. Both join the
// control plane inside the namespace and become Ready with their bridge addresses as InternalIPs and distinct
// pod CIDRs, they reach each other, and nothing in the namespace routes out. Each agent routes the other node's
// pod CIDR via its InternalIP (kubenet), so a pod on node-1 fetches a page from a pod on node-2. Then node-2's
// guest is killed: its Node goes NotReady (Unknown) and node-1 drops the route.
func TestCloudTwoNodes(t *testing.T) {
	image := nodeimage.QCOW2(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := cloud.Up(ctx, cloud.Config{Name: fmt.Sprintf("t%d", os.Getpid()), Dir: t.TempDir(),
		BinDir: toolbin.Kubernetes.ForTest(t), Image: image, NodeMonitorGracePeriod: 20 * time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.Nodes {
				out, _ := n.Run(context.Background(), "journalctl -u berth-agent --no-pager | tail -n 30; ip -4 addr; ip route; cat /etc/network/interfaces.d/*; journalctl -u kubelet --no-pager | grep -i -E 'address|node ip' | tail -n 5")
				t.Logf("--- %s console (tail):\n%s\n--- agent:\n%s", n.Name, n.Tail(30), out)
			}
			for _, comp := range controlplane.Components {
				t.Logf("--- %s log (tail):\n%s", comp, proc.Tail(c.CP.LogPath(comp), 20))
			}
		}
		if err := c.Down(); err != nil {
			t.Errorf("down: %v", err)
		}
		if _, err := os.Stat(c.NS.Path()); !os.IsNotExist(err) {
			t.Errorf("namespace %s left after Down", c.NS.Path())
		}
	})

	for range 2 { // one guest boots at a time
		n, err := c.AddNode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.WaitSSH(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s (%s) answers SSH %v after start", n.Name, n.IP, time.Since(n.Started).Round(time.Second))
	}
	var cidrs []string
	for _, n := range c.Nodes {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		node, err := c.WaitJoined(wctx, n, 2*time.Second)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s Ready %v after start, podCIDR %s", n.Name, time.Since(n.Started).Round(time.Second), node.Spec.PodCIDR)
		retiredToken(t, ctx, c, n)
		out, err := n.Run(ctx, "berth-agent status")
		t.Logf("%s boot and join:\n%s%v", n.Name, out, err)
		var internal []string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = append(internal, a.Address)
			}
		}
		if !slices.Equal(internal, []string{n.IP.String()}) {
			t.Errorf("%s InternalIPs %v, want [%s] (its bridge address)", n.Name, internal, n.IP)
		}
		cidrs = append(cidrs, node.Spec.PodCIDR)
	}
	if cidrs[0] == "" || cidrs[0] == cidrs[1] {
		t.Errorf("pod CIDRs %v: want two distinct ones", cidrs)
	}

	// The nodes reach each other on the bridge; the namespace has no route out and does not forward.
	if out, err := c.Nodes[0].Run(ctx, "timeout 10 bash -c 'exec 3<>/dev/tcp/"+c.Nodes[1].IP.String()+"/22; head -c 7 <&3'"); err != nil || out != "SSH-2.0" {
		t.Errorf("%s cannot reach %s's SSH: %v %q", c.Nodes[0].Name, c.Nodes[1].IP, err, out)
	}
	routes, err := c.NS.Output("ip", "route")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(routes, "default") || strings.Count(strings.TrimSpace(routes), "\n") != 0 {
		t.Errorf("routes in the namespace:\n%s\nwant only the bridge's subnet", routes)
	}
	if fwd, _ := c.NS.Output("sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(fwd) != "0" {
		t.Errorf("the namespace forwards (ip_forward=%s)", fwd)
	}

	// kubenet routes: each node routes the other's pod CIDR via the other's InternalIP.
	for i, n := range c.Nodes {
		other := c.Nodes[1-i]
		want := fmt.Sprintf("%s via %s dev eth0", cidrs[1-i], other.IP)
		waitNode(t, ctx, n, "route to "+other.Name+"'s pods", "ip route show proto 98", func(s string) bool { return strings.TrimSpace(s) == want })
	}

	// A pod on node-1 reaches a pod on node-2 across the nodes.
	pods := c.CP.Client.CoreV1().Pods("default")
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}}, Spec: corev1.PodSpec{NodeName: c.Nodes[1].Name,
		Containers: []corev1.Container{{Name: "web", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
			Command: []string{"httpd", "-f", "-p", "8080", "-h", "/etc"}}}}}
	if _, err := pods.Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	running, err := podwait.Phase(wctx, pods, "web", corev1.PodRunning, time.Second)
	cancel()
	if err != nil {
		t.Fatalf("pod web on %s: %v", c.Nodes[1].Name, err)
	}
	webIP := running.Status.PodIP
	p := runToSuccess(t, ctx, c, "client", c.Nodes[0], "[ \"$(wget -q -O - http://"+webIP+":8080/hostname)\" = web ]")
	t.Logf("a pod on %s (%s) fetched /etc/hostname from the pod on %s (%s)", c.Nodes[0].Name, p.Status.PodIP, c.Nodes[1].Name, webIP)

	// A NodePort Service in front of the pod on node-2 answers on both nodes' addresses (kube-proxy on each node,
	// and node-1 forwards to node-2's pod over the route), asked from the namespace's side of the bridge.
	svc, err := c.CP.Client.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.NS.DialContext}}
	for _, n := range c.Nodes {
		url := fmt.Sprintf("http://%s:%d/hostname", n.IP, svc.Spec.Ports[0].NodePort)
		var body string
		for deadline := time.Now().Add(time.Minute); body != "web\n"; time.Sleep(time.Second) {
			if resp, err := httpc.Get(url); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body = string(b)
			}
			if time.Now().After(deadline) {
				t.Fatalf("NodePort %s: got %q, want the web pod's hostname", url, body)
			}
		}
		t.Logf("NodePort on %s (%s) reached the pod on %s", n.Name, url, c.Nodes[1].Name)
	}
	// The same Service's ClusterIP, from a pod on node-1: kube-proxy's rules there send it to node-2's pod.
	clusterIP := svc.Spec.ClusterIP + ":8080"
	runToSuccess(t, ctx, c, "client-clusterip", c.Nodes[0], "[ \"$(wget -q -O - http://"+clusterIP+"/hostname)\" = web ]")
	t.Logf("a pod on %s reached the pod on %s through the ClusterIP %s", c.Nodes[0].Name, c.Nodes[1].Name, clusterIP)

	// node-2's guest dies: its Node goes NotReady (Unknown) and node-1 drops the route to its pods.
	killed := time.Now()
	if err := c.Nodes[1].Kill(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		n, err := c.CP.Client.CoreV1().Nodes().Get(ctx, c.Nodes[1].Name, metav1.GetOptions{})
		if err == nil && !nodeready.Ready(n) {
			t.Logf("%s NotReady %v after its guest was killed", n.Name, time.Since(killed).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still Ready after its guest was killed (err %v)", c.Nodes[1].Name, err)
		}
	}
	waitNode(t, ctx, c.Nodes[0], "route to the dead node's pods removed", "ip route show proto 98", func(s string) bool { return strings.TrimSpace(s) == "" })
	t.Logf("%s dropped the route %v after the kill", c.Nodes[0].Name, time.Since(killed).Round(time.Second))
}

// runToSuccess runs a busybox pod with script on node n and waits for it to succeed; a failure or a timeout fails
// the test with its logs and every node's routes and forwarding rules.
func runToSuccess(t *testing.T, ctx context.Context, c *cloud.Cloud, name string, n *cloud.Node, script string) *corev1.Pod {
	t.Helper()
	pods := c.CP.Client.CoreV1().Pods("default")
	deadline := int64(90)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: n.Name,
		RestartPolicy: corev1.RestartPolicyNever, ActiveDeadlineSeconds: &deadline, // Debian's static busybox wget crashes with -T
		Containers: []corev1.Container{{Name: name, Image: images.Busybox, ImagePullPolicy: corev1.PullNever, Command: []string{"sh", "-c", script}}}}}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	p, err := podwait.Phase(wctx, pods, name, corev1.PodSucceeded, time.Second)
	if err != nil {
		logs, lerr := pods.GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
		var diag strings.Builder
		for _, n := range c.Nodes {
			out, err := n.Run(ctx, "ip route; sysctl net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; iptables -S FORWARD; iptables -t nat -S POSTROUTING")
			fmt.Fprintf(&diag, "--- %s:\n%s%v\n", n.Name, out, err)
		}
		t.Fatalf("pod %s on %s (%s): %v\nlogs: %s %v\n%s", name, n.Name, script, err, logs, lerr, diag.String())
	}
	return p
}

// waitNode polls cmd in node n until ok accepts its output.
func waitNode(t *testing.T, ctx context.Context, n *cloud.Node, what, cmd string, ok func(string) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := n.SSH.Wait(ctx, cmd, time.Second, ok); err != nil {
		t.Fatalf("%s: %s: %v", n.Name, what, err)
	}
}

// retiredToken fails t unless the node's own bootstrap token is gone from the control plane once it joined: its
// Secret is deleted, and the token no longer authenticates (401), so a copy left in the seed is worthless.
func retiredToken(t *testing.T, ctx context.Context, c *cloud.Cloud, n *cloud.Node) {
	t.Helper()
	if n.Token.IsZero() || n.Token.ID() == c.Join.Token.ID() {
		t.Fatalf("%s has no token of its own (%v; the control plane's is %v)", n.Name, n.Token, c.Join.Token)
	}
	_, err := c.CP.Client.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, bootstrapapi.BootstrapTokenSecretPrefix+n.Token.ID(), metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("%s's bootstrap token Secret after the join: %v, want it deleted", n.Name, err)
	}
	rc := rest.AnonymousClientConfig(c.CP.Admin) // keeps the CA and the namespace's dialer
	rc.BearerToken = n.Token.Value()
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("%s's bootstrap token after the join: %v, want 401 Unauthorized", n.Name, err)
	}
}
