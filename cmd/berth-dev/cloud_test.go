package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/logsql"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/nodeimage"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
)

// `berth-dev cloud` end to end, as `make demo` runs it, with two guests: up (detached) waits for the Nodes to be
// Ready and says how to use the cloud; the nodes' network is as the local cloud promises (nodeNetwork); demo's NodePort answers through each node from pods on both, and so does a
// second demo; its LoadBalancer Service answers the client namespace from pods on both nodes through the guests'
// kube-proxy, keeps the client's address, and drains a node left without a local endpoint (drainLocal); status,
// from the state file, sees the guests running, their Nodes Ready and the LB hosts announcing; a node that dies
// goes NotReady and its route goes (nodeDies); the README's "Try a volume" works with both file servers' classes
// (readmeVolume); a rotated SMB password re-stages a running pod's volume, which it keeps writing to, and a new
// pod mounts with the new one (smbRotation); claims that cannot work get Events naming why (sharesFailures); down leaves no guest, no control plane and no namespace; a second
// down is a no-op. This is the local cloud's one two-node test: it covers internal/dev/cloud's Up, AddNode and
// Down as the CLI runs them.
func TestCloudUpStatusDown(t *testing.T) {
	tier.Require(t, tier.Root, tier.NetNS, tier.QEMU, tier.Kubernetes, tier.VictoriaMetrics) // mmdebstrap chroot, dpkg in the tree, qemu, taps
	// The image as `make demo` bakes it; a second `image` with the same inputs keeps the very same file.
	// berth-dev as a user has it: copied elsewhere, the pinned binaries found in its tool cache. The image's
	// directory is the one the other tests of this tree share (test/nodeimage), so of the tests that boot it,
	// whichever comes first bakes it and the others wait for that bake.
	agent, logs := toolbin.Agent(t), toolbin.Logs(t)
	dev := newDevTool(t, map[string]string{"k8s": toolbin.Kubernetes.ForTest(t), "coredns": toolbin.CoreDNS.ForTest(t),
		"victorialogs": toolbin.VictoriaLogs.ForTest(t)})
	imgs, err := images.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	imgDir := nodeimage.Dir(t, dev.path, agent, logs, imgs.Pause)
	bakeImage := func() (string, string) {
		t.Helper()
		out, err := dev.run(t, "image", "-agent", agent, "-logs", logs, "-pause", imgs.Pause, "-o", imgDir)
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

	// The outputs of up and demo are logged after the test's own messages, and only when it failed.
	var upOut, demoOut string
	defer func() {
		if t.Failed() {
			t.Logf("up:\n%s\ndemo:\n%s", upOut, demoOut)
		}
	}()
	out, err := do("up", "-image", image, "-nodes", "2", "-name", "devtest", "-agent", agent)
	upOut = out
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node-1 Ready", "node-2 Ready", "cluster DNS ready: kube-dns.kube-system at 10.96.0.10",
		"export KUBECONFIG=" + filepath.Join(dir, "kubeconfig"), "get nodes", "ip netns exec berth-devtest", "cloud down --dir " + dir,
		"load balancer: 2 LB hosts, frontend IPs from 10.89.0.0/28 for Services of type LoadBalancer, a client in namespace berth-devtest-client",
		"log analytics: VictoriaLogs at http://10.88.0.1:9428 in the namespace; the log shipper runs on every node",
		"metrics: VictoriaMetrics at http://10.88.0.1:8428 scrapes every node's log shipper",
		"file shares: SMB //10.88.0.1/data (StorageClass berth-smb) and NFS 10.88.0.1:/export (StorageClass berth-nfs)"} {
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
	nodeNetwork(t, dir)
	out, err = do("demo")
	demoOut = out
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
	// The shipped logs: each pod's latest lines, its requests among them, as VictoriaLogs stored them; each node's
	// journal; the query for more.
	if n := len(regexp.MustCompile(`(?m)^  pod hello-\S+, node node-[12], its latest lines:\n    \S+  \S+: url:/hostname$`).FindAllString(out, -1)); n != 2 {
		t.Errorf("demo output shows the shipped requests of %d pods, want 2", n)
	}
	if n := len(regexp.MustCompile(`(?m)^  journal of node-[12]: [1-9]\d* entries`).FindAllString(out, -1)); n != 2 {
		t.Errorf("demo output shows the shipped journal of %d nodes, want 2", n)
	}
	if !strings.Contains(out, "ip netns exec berth-devtest curl -s http://10.88.0.1:9428/select/logsql/query") {
		t.Error("demo output does not show the query for more")
	}
	// The scraped metrics: each node's memory (a 2 GiB guest) and load from node_exporter's collectors, each hello
	// pod's memory and CPU from its kubelet's Summary API.
	if n := len(regexp.MustCompile(`(?m)^  node node-[12]: memory (1[5-9]\d\d|20[0-4]\d) MiB, \d+ MiB available, load [\d.]+ \(node_exporter\)$`).FindAllString(out, -1)); n != 2 {
		t.Errorf("demo output shows node_exporter's memory of %d nodes, want 2", n)
	}
	if n := len(regexp.MustCompile(`(?m)^  pod hello-\S+: memory [\d.]+ MiB, CPU [\d.]+ s \(the kubelet's Summary API\)$`).FindAllString(out, -1)); n != 2 {
		t.Errorf("demo output shows the Summary API's figures of %d pods, want 2", n)
	}
	shippedNumberedLines(t, dir)
	readmeVolume(t, dir, filepath.Join(dev.k8sBin, "kubectl"))
	smbRotation(t, dir)
	sharesFailures(t, dir)
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
	if err != nil || strings.Count(out, "node Ready") != 2 || !regexp.MustCompile(`(?m)^lb-[12] +pid \d+ +announcing 10\.89\.0\.`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^logs: victoria-logs pid [1-9]\d* at http://10\.88\.0\.1:9428, log shipper 2 of 2 pods ready$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^metrics: victoria-metrics pid [1-9]\d* at http://10\.88\.0\.1:8428$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^shares: smbd pid [1-9]\d* serving //10\.88\.0\.1/data, ganesha pid [1-9]\d* serving 10\.88\.0\.1:/export, provisioner [12] of 2 pods ready$`).MatchString(out) {
		t.Errorf("status: %v\n%s", err, out)
	}

	// Last, as it leaves the cloud broken: a node dies.
	nodeDies(t, dir)
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
	st, cs := adminOf(t, dir)
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
	// 5 s: a loaded TCG guest answers late at times; a request sent to node-2, which has no local endpoint, is dropped
	// and times out however long the wait.
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
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

// shippedNumberedLines: a pod on each node writes 2,000 numbered lines (every 100th longer than 16 KiB, which the
// runtime splits into partial records); the DaemonSet on its node ships every one exactly once to the cloud's
// VictoriaLogs, joined whole, with the pod's namespace, name, container, node and labels.
func shippedNumberedLines(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	st, cs := adminOf(t, dir)
	const lines = 2000
	script := fmt.Sprintf(`i=0; long=$(printf '%%20000s' '' | tr ' ' x)
while [ $i -lt %d ]; do i=$((i+1)); if [ $((i %% 100)) = 0 ]; then echo "numbered $i $long"; else echo "numbered $i"; fi; done
sleep 3600`, lines)
	for _, node := range []string{"node-1", "node-2"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "numbered-" + node, Labels: map[string]string{"test": "numbered"}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "writer", Image: images.Busybox,
				ImagePullPolicy: corev1.PullNever, Command: []string{"sh", "-c", script}}}}}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.CoreV1().Pods("default").Delete(ctx, pod.Name, metav1.DeleteOptions{}) })
	}
	ns := netns.NS{Name: st.Namespace}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext}}
	for _, node := range []string{"node-1", "node-2"} {
		pod := "numbered-" + node
		q := fmt.Sprintf(`k8s.pod.name:=%s "numbered"`, pod)
		var got []map[string]string
		var err error
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(2 * time.Second) {
			got, err = logsql.Query(ctx, httpc, st.Analytics.LogsURL, q, 0)
			if err == nil && len(got) >= lines || time.Now().After(deadline) {
				break
			}
		}
		seen := map[int]int{}
		for _, e := range got {
			var i int
			fmt.Sscanf(e["_msg"], "numbered %d", &i)
			seen[i]++
			if want := fmt.Sprintf("numbered %d", i); i%100 == 0 {
				want += " " + strings.Repeat("x", 20000)
				if e["_msg"] != want {
					t.Errorf("%s line %d: %d bytes, want %d (the partial records joined)", pod, i, len(e["_msg"]), len(want))
				}
			}
			if e["k8s.namespace.name"] != "default" || e["k8s.container.name"] != "writer" || e["k8s.node.name"] != node {
				t.Fatalf("%s line %d: metadata %v", pod, i, e)
			}
		}
		lost, dup := 0, 0
		for i := 1; i <= lines; i++ {
			switch {
			case seen[i] == 0:
				lost++
			case seen[i] > 1:
				dup++
			}
		}
		t.Logf("%s: %d lines shipped, %d lost, %d duplicated", pod, len(got), lost, dup)
		if lost != 0 || dup != 0 || len(got) != lines {
			t.Errorf("%s: %d entries, %d lines lost, %d duplicated; want %d, none lost or twice", pod, len(got), lost, dup, lines)
		}
		// The informer knows the pod within moments of its start; a line read before that ships without labels.
		if len(got) > 0 && !slices.ContainsFunc(got, func(e map[string]string) bool { return e["kubernetes.labels.test"] == "numbered" }) {
			t.Errorf("%s: no entry with the pod label test=numbered (kubernetes.labels.test): %v", pod, got[len(got)-1])
		}
	}
}

// adminOf is the state of the cloud in dir and a cluster-admin client for it.
func adminOf(t *testing.T, dir string) (cloud.State, kubernetes.Interface) {
	t.Helper()
	st, err := cloud.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := cloud.AdminClient(dir, st)
	if err != nil {
		t.Fatal(err)
	}
	return st, cs
}
