package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/guestssh"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/podwait"
)

// nodeNetwork checks the network `cloud up` built for its two nodes (the local cloud's own tests: one cloud, the
// one a user gets). Each Node has its bridge address as its only InternalIP and a pod CIDR of its own; each node's
// token Secret is gone once it joined (single use); the nodes reach each other on the bridge and the namespace has
// no route out; each agent routes the other node's pod CIDR via its InternalIP (kubenet), so a pod on node-1
// fetches a page from a pod on node-2 by the pod's own address. (NodePort, ClusterIP and DNS are the demo's.)
func nodeNetwork(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, cs := adminOf(t, dir)
	if len(st.Nodes) != 2 {
		t.Fatalf("the cloud has %d nodes, want 2", len(st.Nodes))
	}
	var cidrs []string
	for _, n := range st.Nodes {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var internal []string
		for _, a := range node.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				internal = append(internal, a.Address)
			}
		}
		if !slices.Equal(internal, []string{n.IP}) {
			t.Errorf("%s InternalIPs %v, want [%s] (its bridge address)", n.Name, internal, n.IP)
		}
		cidrs = append(cidrs, node.Spec.PodCIDR)
	}
	if cidrs[0] == "" || cidrs[0] == cidrs[1] {
		t.Fatalf("pod CIDRs %v: want two distinct ones", cidrs)
	}
	secrets, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).List(ctx, metav1.ListOptions{FieldSelector: "type=" + string(bootstrapapi.SecretTypeBootstrapToken)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		if string(s.Data[bootstrapapi.BootstrapTokenDescriptionKey]) == "berth node join" {
			t.Errorf("a node's bootstrap token Secret %s is left after the nodes joined", s.Name)
		}
	}
	for _, n := range st.Nodes {
		retiredToken(t, ctx, dir, st, n)
	}

	ssh := func(n cloud.NodeState) guestssh.Target { return st.SSH(n) }
	// Asked until it answers (up to two minutes): on a loaded TCG guest either sshd may be slow to greet.
	waitGuest(t, ctx, ssh(st.Nodes[0]), st.Nodes[0].Name, "reach "+st.Nodes[1].Name+"'s SSH on the bridge",
		"timeout 10 bash -c 'exec 3<>/dev/tcp/"+st.Nodes[1].IP+"/22; head -c 7 <&3'", func(s string) bool { return s == "SSH-2.0" })
	if routes, err := (netns.NS{Name: st.Namespace}).Output("ip", "route"); err != nil || strings.Contains(routes, "default") {
		t.Errorf("routes in the namespace (%v):\n%s\nwant no default route", err, routes)
	}
	for i, n := range st.Nodes {
		other := st.Nodes[1-i]
		want := fmt.Sprintf("%s via %s dev eth0", cidrs[1-i], other.IP)
		waitGuest(t, ctx, ssh(n), n.Name, "route to "+other.Name+"'s pods", "ip route show proto 98", func(s string) bool { return strings.TrimSpace(s) == want })
	}

	pods := cs.CoreV1().Pods("default")
	web := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.PodSpec{NodeName: st.Nodes[1].Name,
		Containers: []corev1.Container{{Name: "web", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
			Command: []string{"httpd", "-f", "-p", "8080", "-h", "/etc"}}}}}
	if _, err := pods.Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	running, err := podwait.Phase(wctx, pods, "web", corev1.PodRunning, time.Second)
	wcancel()
	if err != nil {
		t.Fatalf("pod web on %s: %v", st.Nodes[1].Name, err)
	}
	deadline := int64(180) // counted from the pod's start, which on a busy TCG node may come late
	client := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "client"}, Spec: corev1.PodSpec{NodeName: st.Nodes[0].Name,
		RestartPolicy: corev1.RestartPolicyNever, ActiveDeadlineSeconds: &deadline, // Debian's static busybox wget crashes with -T
		Containers: []corev1.Container{{Name: "client", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
			Command: []string{"sh", "-c", "[ \"$(timeout 20 wget -q -O - http://" + running.Status.PodIP + ":8080/hostname)\" = web ]"}}}}}
	if _, err := pods.Create(ctx, client, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel = context.WithTimeout(ctx, 5*time.Minute)
	p, err := podwait.Phase(wctx, pods, "client", corev1.PodSucceeded, time.Second)
	wcancel()
	if err != nil {
		logs, _ := pods.GetLogs("client", &corev1.PodLogOptions{}).DoRaw(ctx)
		t.Fatalf("a pod on %s fetching from the pod on %s (%s): %v\n%s", st.Nodes[0].Name, st.Nodes[1].Name, running.Status.PodIP, err, logs)
	}
	t.Logf("a pod on %s (%s) fetched /etc/hostname from the pod on %s (%s)", st.Nodes[0].Name, p.Status.PodIP, st.Nodes[1].Name, running.Status.PodIP)
	for _, name := range []string{"web", "client"} {
		_ = pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	}
}

// nodeDies kills node-2's guest (SIGKILL to its qemu): its Node goes NotReady (Unknown) and node-1's agent drops
// the route to its pods.
func nodeDies(t *testing.T, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	st, cs := adminOf(t, dir)
	victim := st.Nodes[1]
	recs, _, err := proc.DefaultRegistry(nil).Records()
	if err != nil {
		t.Fatal(err)
	}
	pid := 0
	for _, r := range recs {
		if r.Group == dir && r.Name == victim.Name && r.Running() {
			pid = r.PID
		}
	}
	if pid == 0 {
		t.Fatalf("no running guest %s in the process registry", victim.Name)
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		n, err := cs.CoreV1().Nodes().Get(ctx, victim.Name, metav1.GetOptions{})
		if err == nil && !nodeready.Ready(n) {
			t.Logf("%s NotReady %v after its guest was killed", n.Name, time.Since(killed).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still Ready 3 minutes after its guest was killed (err %v)", victim.Name, err)
		}
	}
	waitGuest(t, ctx, st.SSH(st.Nodes[0]), st.Nodes[0].Name, "route to the dead node's pods removed", "ip route show proto 98", func(s string) bool { return strings.TrimSpace(s) == "" })
	t.Logf("%s dropped the route %v after the kill", st.Nodes[0].Name, time.Since(killed).Round(time.Second))
}

// waitGuest polls cmd on a guest until ok accepts its output, for up to two minutes.
func waitGuest(t *testing.T, ctx context.Context, ssh guestssh.Target, name, what, cmd string, ok func(string) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := ssh.Wait(ctx, cmd, time.Second, ok); err != nil {
		t.Fatalf("%s: %s: %v", name, what, err)
	}
}

// retiredToken fails t unless the token in node n's seed (the user data the host keeps, 0600) no longer
// authenticates (401): the node retired its own token once it joined, so a copy left anywhere is worthless.
func retiredToken(t *testing.T, ctx context.Context, dir string, st cloud.State, n cloud.NodeState) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, n.Name, n.Name+".seed", "user-data"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*token: ([a-z0-9]{6}\.[a-z0-9]{16})$`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("%s's seed has no bootstrap token", n.Name)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "controlplane", "admin.conf"))
	if err != nil {
		t.Fatal(err)
	}
	rc = rest.AnonymousClientConfig(rc) // keeps the CA
	rc.BearerToken = string(m[1])
	ns := netns.NS{Name: st.Namespace}
	rc.Dial = ns.DialContext
	rc.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("%s's bootstrap token after the join: %v, want 401 Unauthorized", n.Name, err)
	}
}
