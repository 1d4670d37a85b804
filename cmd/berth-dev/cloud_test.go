package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
)

// `berth-dev cloud` end to end, as `make demo` runs it, with two guests: up (detached) waits for the Nodes to be
// Ready and says how to use the cloud; demo's NodePort answers through each node from pods on both, and so does a
// second demo; its LoadBalancer Service answers the client namespace from pods on both nodes through the guests'
// kube-proxy, keeps the client's address, and drains a node left without a local endpoint (drainLocal); status,
// from the state file, sees the guests running, their Nodes Ready and the LB hosts announcing; down leaves no
// guest, no control plane and no namespace; a second down is a no-op.
func TestCloudUpStatusDown(t *testing.T) {
	tier.Require(t, tier.Root, tier.NetNS, tier.QEMU, tier.Kubernetes) // mmdebstrap chroot, dpkg in the tree, qemu, taps
	// The image as `make demo` bakes it; a second `image` with the same inputs keeps the very same file.
	// berth-dev as a user has it: copied elsewhere, the pinned binaries found in its tool cache.
	agent, imgDir := toolbin.Agent(t), t.TempDir()
	dev := newDevTool(t, map[string]string{"k8s": toolbin.Kubernetes.ForTest(t), "coredns": toolbin.CoreDNS.ForTest(t)})
	imgs, err := images.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bakeImage := func() (string, string) {
		t.Helper()
		out, err := dev.run(t, "image", "-agent", agent, "-pause", imgs.Pause, "-o", imgDir)
		if err != nil {
			t.Fatalf("image: %v", err)
		}
		path := strings.TrimSpace(out)
		id, err := cloud.ImageID(path)
		if err != nil {
			t.Fatal(err)
		}
		return path, id
	}
	image, id := bakeImage()
	if again, againID := bakeImage(); again != image || againID != id {
		t.Errorf("a second image with unchanged inputs baked again: %s %s, first %s %s", again, againID, image, id)
	}
	// A fixed directory: a cloud that a killed run of this test left (it is detached) is stopped by the next run.
	dir := filepath.Join(os.TempDir(), "berth-dev-cloud-test")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	do := func(args ...string) (string, error) {
		return dev.run(t, append([]string{"cloud"}, append(args, "-dir", dir)...)...)
	}
	t.Cleanup(func() {
		if _, err := do("down"); err != nil {
			t.Errorf("cleanup down: %v", err)
		}
	})

	out, err := do("up", "-image", image, "-nodes", "2", "-name", "devtest", "-agent", agent)
	t.Logf("up:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node-1 Ready", "node-2 Ready", "cluster DNS ready: kube-dns.kube-system at 10.96.0.10",
		"export KUBECONFIG=" + filepath.Join(dir, "kubeconfig"), "get nodes", "ip netns exec berth-devtest", "cloud down --dir " + dir,
		"load balancer: 2 LB hosts, frontend IPs from 10.89.0.0/28 for Services of type LoadBalancer, a client in namespace berth-devtest-client"} {
		if !strings.Contains(out, want) {
			t.Errorf("up output lacks %q", want)
		}
	}
	// The printed kubeconfig works from this host's own network namespace, with a plain kubectl.
	kubectl := exec.Command(filepath.Join(dev.k8sBin, "kubectl"), "get", "nodes", "-o", "name")
	kubectl.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(dir, "kubeconfig"))
	if got, err := kubectl.CombinedOutput(); err != nil || string(got) != "node/node-1\nnode/node-2\n" {
		t.Errorf("kubectl get nodes with the printed kubeconfig: %v\n%s", err, got)
	}
	out, err = do("demo")
	t.Logf("demo:\n%s", out)
	if err != nil {
		t.Errorf("demo: %v", err)
	}
	for _, via := range []string{"via node-1", "via node-2"} {
		if !strings.Contains(out, via) || strings.Count(out, "(on node-") != 7 {
			t.Errorf("demo output does not show two pods answering %s", via)
		}
	}
	// The LoadBalancer Service: a frontend IP from the pool, both pods answer the client namespace through it
	// (the nodes' real kube-proxy accepts the frontend IP), and one live LB host announces it.
	if !regexp.MustCompile(`(?m)^from the client namespace through the load balancer http://10\.89\.0\.\d+/hostname: hello-\S+ \(on node-[12]\), hello-\S+ \(on node-[12]\)$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^10\.89\.0\.\d+ is announced by lb-[12] of the live LB hosts lb-1, lb-2$`).MatchString(out) {
		t.Error("demo output does not show both pods answering through the load balancer's frontend IP, announced by one of two live LB hosts")
	}
	if !strings.Contains(out, "the pod sees the client as 10.88.0.4 (externalTrafficPolicy Local") {
		t.Error("demo output does not show the pod seeing the client's own address")
	}
	if !regexp.MustCompile(`(?m)^by name from a pod: hello\.default\.svc\.cluster\.local answered by hello-\S+ \(on node-[12]\)$`).MatchString(out) {
		t.Error("demo output does not show a pod reaching the Service by its name")
	}
	// The summary names each node with its boot → Ready and its agent's join time.
	if rows := regexp.MustCompile(`(?m)^node-[12] +10\.88\.0\.1[12] +v1\.37\.2 +\S+ +[0-9m.]+s +[0-9m.]+s$`).FindAllString(out, -1); len(rows) != 2 {
		t.Errorf("demo summary has %d node rows with join times, want 2", len(rows))
	}
	drainLocal(t, dir)
	// up -reuse keeps the healthy cloud that came up from this image; another node count would not do.
	if out, err := do("up", "-reuse", "-image", image, "-nodes", "2", "-name", "devtest", "-agent", agent); err != nil || !strings.Contains(out, "reusing the cloud") {
		t.Errorf("up -reuse: %v\n%s", err, out)
	}
	if why := reusable(context.Background(), dir, image, 3, proc.DefaultRegistry(log)); why != "it has 2 nodes, not 3" {
		t.Errorf("reusable with 3 nodes: %q", why)
	}
	// A second demo on the same cloud replaces its objects and passes again.
	if out, err := do("demo"); err != nil || strings.Count(out, "(on node-") != 7 {
		t.Errorf("second demo: %v\n%s", err, out)
	}
	out, err = do("status")
	t.Logf("status:\n%s", out)
	if err != nil || strings.Count(out, "node Ready") != 2 || !regexp.MustCompile(`(?m)^lb-[12] +pid \d+ +announcing 10\.89\.0\.`).MatchString(out) {
		t.Errorf("status: %v", err)
	}

	if out, err := do("down"); err != nil || !strings.Contains(out, "is down") {
		t.Fatalf("down: %v %s", err, out)
	}
	recs, _, err := proc.DefaultRegistry(log).Records()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if strings.HasPrefix(r.Group, dir) && r.Running() {
			t.Errorf("left running after down: %s pid %d", r.Name, r.PID)
		}
	}
	for _, ns := range []string{"berth-devtest", "berth-devtest-client", "berth-devtest-lb1", "berth-devtest-lb2"} {
		if _, err := os.Stat("/run/netns/" + ns); !os.IsNotExist(err) {
			t.Errorf("namespace %s left after down (%v)", ns, err)
		}
	}
	if _, err := cloud.Load(dir); !os.IsNotExist(err) {
		t.Errorf("cloud.json left after down (%v)", err)
	}
	if _, err := do("status"); err == nil {
		t.Error("status after down succeeded")
	}
	if _, err := do("down"); err != nil {
		t.Errorf("second down: %v", err)
	}
}

// drainLocal: the demo's LoadBalancer Service has externalTrafficPolicy Local. With node-2 cordoned and its hello
// pod deleted (the replacement cannot go to node-1, one pod per node), node-2 has no local endpoint: its kube-proxy
// answers the healthCheckNodePort with 503, the LB hosts take node-2 out, and every request through the frontend
// IP is answered by node-1's pod, none lost. Uncordoned, the Deployment fills node-2 again.
func drainLocal(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	st, err := cloud.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := cloud.AdminClient(dir, st)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services("default").Get(ctx, "hello-lb", metav1.GetOptions{})
	if err != nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
		t.Fatalf("hello-lb: %v", err)
	}
	url := "http://" + svc.Status.LoadBalancer.Ingress[0].IP + "/hostname"
	cordon := func(on bool) {
		t.Helper()
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := cs.CoreV1().Nodes().Get(ctx, "node-2", metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Spec.Unschedulable = on
			_, err = cs.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cordon(true)
	defer cordon(false)
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
	if err != nil {
		t.Fatal(err)
	}
	var onNode1 string
	for _, p := range pods.Items {
		switch p.Spec.NodeName {
		case "node-2":
			if err := cs.CoreV1().Pods("default").Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		case "node-1":
			onNode1 = p.Name
		}
	}
	client := netns.NS{Name: st.LB.Client}
	httpc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	get := func() (string, error) {
		resp, err := httpc.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)), err
	}
	// Drained within the probes' interval × threshold (2 s × 2) after kube-proxy's health check turns: 20 answers
	// in a row from node-1's pod.
	streak := 0
	for deadline := time.Now().Add(90 * time.Second); streak < 20; {
		if time.Now().After(deadline) {
			t.Fatalf("node-2 was not drained from %s in 90 s (streak of %d answers from %s)", url, streak, onNode1)
		}
		if pod, err := get(); err == nil && pod == onNode1 {
			streak++
		} else {
			streak = 0
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Drained: no request fails and all go to node-1's pod.
	for i := range 30 {
		if pod, err := get(); err != nil || pod != onNode1 {
			t.Errorf("request %d through the drained Service: %q, %v; want %s", i, pod, err, onNode1)
		}
	}
}
