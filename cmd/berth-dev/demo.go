package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/agent/lb/lbstatus"
	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/imagebuilder/deb"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/guestssh"
	"berth.dev/berth/internal/dev/images"
	"berth.dev/berth/internal/dev/logsql"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/nodeimage"
	"berth.dev/berth/internal/dev/toolcache"
)

// imageCmd runs `berth-dev image`: bake the local cloud's node image (Debian 12, the pinned kubelet, the given
// agent, the locally built pause and busybox images, the given log shipper's image) with the berth-disk builder's phases and print its path.
func imageCmd(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("berth-dev image", flag.ContinueOnError)
	dir := fs.String("o", filepath.Join(filepath.Dir(defaultDir()), "image"), "output directory (node.qcow2, node.manifest.json)")
	agent := fs.String("agent", "", "the static berth-agent binary (`make agent` prints it) (required)")
	logs := fs.String("logs", "", "the static berth-logs binary, made into the log shipper's image (`make agent` builds it beside the agent) (required)")
	pause := fs.String("pause", filepath.Join(toolcache.Dir(), "images", "pause.oci.tar"), "the pause image tarball (`make plugin` or `berth-pause image -o` writes it)")
	bin := fs.String("k8s-bin", os.Getenv("BERTH_K8S_BIN"), k8sBinUsage)
	corednsBin := fs.String("coredns-bin", os.Getenv("BERTH_COREDNS_BIN"), "directory with the coredns binary (env BERTH_COREDNS_BIN; default: its newest complete build in the tool cache, which `make tools` fills)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agent == "" {
		return errors.New("image: -agent: required")
	}
	if *logs == "" {
		return errors.New("image: -logs: required")
	}
	if *corednsBin == "" {
		var err error
		if *corednsBin, err = toolcache.Find(toolcache.Dir(), "coredns", toolcache.CoreDNSVersion); err != nil {
			return fmt.Errorf("image: -coredns-bin: %w", err)
		}
	}
	if _, err := os.Stat(*pause); err != nil {
		return fmt.Errorf("image: -pause: %w (`make plugin` writes it)", err)
	}
	k8s, err := k8sBin(*bin)
	if err != nil {
		return err
	}
	start := time.Now()
	img, reused, err := nodeimage.Bake(ctx, nodeimage.Sources{K8sBin: k8s, Agent: *agent, Logs: *logs, PauseImage: *pause,
		CoreDNS: filepath.Join(*corednsBin, "coredns")}, *dir, log)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	if reused {
		log.Info("node image unchanged (same berth-dev, agent, log shipper, pause image, CoreDNS, kubelet and kube-proxy); reusing it", "path", img)
	} else {
		log.Info("node image baked", "path", img, "took", time.Since(start).Round(time.Second))
	}
	fmt.Fprintln(out, img)
	return nil
}

// debCmd writes the agent's .deb (the package the image builder installs) for installing by hand on an existing
// machine, and prints its path.
func debCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("berth-dev deb", flag.ContinueOnError)
	dir := fs.String("o", ".", "output directory")
	agent := fs.String("agent", "", "the static berth-agent binary (`make agent` prints it) (required)")
	version := fs.String("version", payload.DebVersion(), "package version")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *agent == "" {
		return errors.New("deb: -agent: required")
	}
	pkg, err := payload.AgentPackage(*agent, *version)
	if err != nil {
		return fmt.Errorf("deb: %w", err)
	}
	path, err := deb.WriteFile(*dir, pkg)
	if err != nil {
		return fmt.Errorf("deb: %w", err)
	}
	fmt.Fprintln(out, path)
	return nil
}

// cloudDemo deploys a small workload on a running cloud: a Deployment of busybox httpd (one pod per node) behind a
// NodePort Service. It asks the Service through every node's address, from the namespace's side of the bridge, and
// fails unless each node's port reaches pods on every node. It prints what answered and a summary of the nodes.
func cloudDemo(ctx context.Context, out io.Writer, dir string) error {
	dir, _ = filepath.Abs(dir)
	st, err := cloud.Load(dir)
	if err != nil {
		return fmt.Errorf("no cloud in %s (run `berth-dev cloud up`): %w", dir, err)
	}
	ns := netns.NS{Name: st.Namespace}
	cs, err := cloud.AdminClient(dir, st)
	if err != nil {
		return err
	}
	replicas := int32(len(st.Nodes))
	labels := map[string]string{"app": "hello"}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "hello"}, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
			// One pod per node: the demo shows traffic crossing nodes.
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
				WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
			Containers: []corev1.Container{{Name: "httpd", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", helloServer}}}}}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hello"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, Selector: labels,
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	// Start over on a second run: the demo's objects are replaced. Foreground deletion keeps the Deployment until
	// its pods are gone, so the new pods do not share the nodes with terminating ones.
	foreground := metav1.DeletePropagationForeground
	_ = cs.AppsV1().Deployments("default").Delete(ctx, "hello", metav1.DeleteOptions{PropagationPolicy: &foreground})
	_ = cs.CoreV1().Services("default").Delete(ctx, "hello", metav1.DeleteOptions{})
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		_, err := cs.AppsV1().Deployments("default").Get(ctx, "hello", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the previous demo's Deployment hello is still being deleted (%v)", err)
		}
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return err
	}
	if svc, err = cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	port := svc.Spec.Ports[0].NodePort
	fmt.Fprintf(out, "deployed hello (%d pods of busybox httpd) behind NodePort %d\n", replicas, port)

	// Pods running, one per node; their hostnames are their names.
	podNode := map[string]string{}
	for deadline := time.Now().Add(3 * time.Minute); len(podNode) < int(replicas); time.Sleep(time.Second) {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hello"})
		if err == nil {
			clear(podNode)
			for _, p := range pods.Items {
				if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
					podNode[p.Name] = p.Spec.NodeName
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hello pods not running on every node: %v (%v)", podNode, err)
		}
	}
	httpc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	var errs []error
	for _, n := range st.Nodes {
		url := fmt.Sprintf("http://%s:%d/hostname", n.IP, port)
		if err := answers(out, httpc, "via "+n.Name+" "+url, url, podNode); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if st.LB == nil {
		fmt.Fprintln(out, "(this cloud has no load balancer: `berth-dev cloud up -agent ...` starts one)")
	} else if err := viaLoadBalancer(ctx, out, cs, st, podNode); err != nil {
		return err
	}
	if err := byName(ctx, out, cs, podNode); err != nil {
		return err
	}
	if st.Analytics == nil {
		fmt.Fprintln(out, "(this cloud has no log analytics service: bring it up again with `berth-dev cloud up`)")
	} else if err := shippedLogs(ctx, out, st, podNode); err != nil {
		return err
	} else if err := scrapedMetrics(ctx, out, st, podNode); err != nil {
		return err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	started := map[string]cloud.NodeState{}
	for _, n := range st.Nodes {
		started[n.Name] = n
	}
	fmt.Fprintf(out, "\n%-8s %-12s %-9s %-14s %-12s %s\n", "NODE", "IP", "KUBELET", "POD CIDR", "BOOT→READY", "AGENT JOIN")
	for _, n := range nodes.Items {
		ip := ""
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				ip = a.Address
			}
		}
		boot, join := "-", "-"
		if g, ok := started[n.Name]; ok {
			if c := nodeready.Condition(&n); c != nil && nodeready.Ready(&n) && !g.Started.IsZero() {
				boot = c.LastTransitionTime.Sub(g.Started).Round(time.Second).String()
			}
			// Read over SSH from a guest that may be slow under load: retried, not dropped.
			var d time.Duration
			var err error
			for try := 0; try < 5; try++ {
				if d, err = agentJoinTime(ctx, st.SSH(g)); err == nil {
					break
				}
				time.Sleep(2 * time.Second)
			}
			if err == nil {
				join = d.Round(100 * time.Millisecond).String()
			} else {
				fmt.Fprintf(out, "(%s: agent join time unknown: %v)\n", n.Name, err)
			}
		}
		fmt.Fprintf(out, "%-8s %-12s %-9s %-14s %-12s %s\n", n.Name, ip, n.Status.NodeInfo.KubeletVersion, n.Spec.PodCIDR, boot, join)
	}
	fmt.Fprintln(out, "BOOT→READY: guest start to the Node's Ready; AGENT JOIN: berth-agent's start to its READY (the Node Ready).")
	return nil
}

// helloServer serves /etc over HTTP on 8080: /hostname is the pod's name, and /cgi-bin/ip the address the request
// came from, as the pod sees it. It logs a line when it starts and two for each request (-vv), which the log shipper
// ships to the cloud's VictoriaLogs.
const helloServer = `busybox mkdir -p /etc/cgi-bin
cat > /etc/cgi-bin/ip <<'END'
#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "$REMOTE_ADDR"
END
busybox chmod 755 /etc/cgi-bin/ip
echo "hello: $(hostname) serving /etc on port 8080"
exec httpd -f -vv -p 8080 -h /etc`

// answers gets url until every pod of podNode has answered (its hostname) or 90 s passed, and prints who did.
func answers(out io.Writer, httpc *http.Client, what, url string, podNode map[string]string) error {
	seen := map[string]bool{}
	for deadline := time.Now().Add(90 * time.Second); len(seen) < len(podNode) && time.Now().Before(deadline); {
		resp, err := httpc.Get(url)
		if err != nil {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if pod := strings.TrimSpace(string(body)); podNode[pod] != "" {
			seen[pod] = true
		}
	}
	var answered []string
	for pod := range seen {
		answered = append(answered, fmt.Sprintf("%s (on %s)", pod, podNode[pod]))
	}
	slices.Sort(answered)
	fmt.Fprintf(out, "%s: %s\n", what, strings.Join(answered, ", "))
	if len(seen) < len(podNode) {
		return fmt.Errorf("requests %s reached %d of %d pods", what, len(seen), len(podNode))
	}
	return nil
}

// viaLoadBalancer gives the demo's pods a Service of type LoadBalancer, waits for its frontend IP and shows that
// requests from the client namespace, outside the cluster, reach the pods on every node through it.
func viaLoadBalancer(ctx context.Context, out io.Writer, cs kubernetes.Interface, st cloud.State, podNode map[string]string) error {
	const name = "hello-lb"
	_ = cs.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
		if _, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the previous demo's Service %s is still there", name)
		}
	}
	// externalTrafficPolicy Local: each node sends the flows it gets to its own pod, and the pod sees the client's
	// address (the LB host forwards without NAT, kube-proxy does not masquerade).
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "hello"}, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	var vip string
	for deadline := time.Now().Add(time.Minute); vip == ""; time.Sleep(500 * time.Millisecond) {
		s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			vip = s.Status.LoadBalancer.Ingress[0].IP
		}
		if vip == "" && time.Now().After(deadline) {
			return fmt.Errorf("Service %s got no frontend IP in a minute (see %s/logs/lb-controller.log)", name, st.LB.Dir)
		}
	}
	fmt.Fprintf(out, "Service %s (type LoadBalancer) got frontend IP %s\n", name, vip)
	client := netns.NS{Name: st.LB.Client}
	httpc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	url := fmt.Sprintf("http://%s/hostname", vip)
	if err := answers(out, httpc, "from the client namespace through the load balancer "+url, url, podNode); err != nil {
		return fmt.Errorf("%w (LB hosts' logs: %s/logs)", err, st.LB.Dir)
	}
	resp, err := httpc.Get(fmt.Sprintf("http://%s/cgi-bin/ip", vip))
	if err != nil {
		return fmt.Errorf("the client's address as a pod sees it: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	seenAs := strings.TrimPrefix(strings.Trim(strings.TrimSpace(string(body)), "[]"), "::ffff:") // busybox: [::ffff:a.b.c.d]
	fmt.Fprintf(out, "the pod sees the client as %s (externalTrafficPolicy Local keeps the client's address)\n", seenAs)
	if clientIP := st.LB.ClientIP; clientIP != "" && seenAs != clientIP {
		return fmt.Errorf("the pod saw the client as %q, not as its address %s", seenAs, clientIP)
	}
	for i := range st.LB.Hosts {
		hs, err := lbstatus.Read(filepath.Join(st.LB.Dir, fmt.Sprintf("lb-%d.json", i+1)))
		if err == nil && slices.Contains(hs.Announced, vip) {
			fmt.Fprintf(out, "%s is announced by %s of the live LB hosts %s\n", vip, hs.Identity, strings.Join(hs.LiveHosts, ", "))
		}
	}
	return nil
}

// byName runs a pod that finds the demo Service by its name through cluster DNS (busybox's nslookup asks the
// nameserver the kubelet wrote into the pod's resolv.conf, the kube-dns Service) and fetches from the address it
// got; it fails unless a hello pod answers.
func byName(ctx context.Context, out io.Writer, cs kubernetes.Interface, podNode map[string]string) error {
	const name, fqdn = "hello-by-name", "hello.default.svc.cluster.local"
	// busybox's image has no /tmp: the answer stays in a variable. Debian's static busybox wget crashes with -T:
	// each fetch is bounded by the timeout applet instead, and tried again (a busy node may still route the
	// Service to a pod the demo just replaced, whose address no longer answers), all well inside the pod's
	// deadline.
	script := `out=$(nslookup -type=a ` + fqdn + ` 2>&1)
ip=$(echo "$out" | awk '/^Name:/ { n = 1 } n && /^Address/ { print $2; exit }')
[ -n "$ip" ] || { echo "$out"; exit 1; }
echo "` + fqdn + ` is $ip"
for i in 1 2 3 4 5 6; do
  if r=$(timeout 10 wget -q -O - http://$ip/hostname); then echo "answered by $r"; exit 0; fi
  sleep 2
done
echo "no answer from $ip"; exit 1`
	pods := cs.CoreV1().Pods("default")
	_ = pods.Delete(ctx, name, metav1.DeleteOptions{})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		if _, err := pods.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			break
		} else if time.Now().After(deadline) {
			return fmt.Errorf("the previous demo's pod %s is still being deleted (%v)", name, err)
		}
	}
	// The deadline counts from the pod's start, which on a busy TCG node may precede the container's by a minute.
	deadline := int64(180)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
		ActiveDeadlineSeconds: &deadline,
		Containers: []corev1.Container{{Name: "client", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
			Command: []string{"sh", "-c", script}}}}}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	var phase corev1.PodPhase
	exit := int32(-1) // the client container's exit code, once it has ended
	// The pod's own deadline ends it (its kubelet may be late to notice on a busy node): a minute more.
	wait := time.Duration(deadline)*time.Second + time.Minute
	for deadline := time.Now().Add(wait); phase != corev1.PodSucceeded && phase != corev1.PodFailed; time.Sleep(time.Second) {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			phase = p.Status.Phase
			for _, c := range p.Status.ContainerStatuses {
				if t := c.State.Terminated; t != nil {
					exit = t.ExitCode
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s did not finish in %v (phase %q, %v)", name, wait, phase, err)
		}
	}
	logs, err := pods.GetLogs(name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("pod %s: logs: %w", name, err)
	}
	answered := ""
	for _, line := range strings.Split(string(logs), "\n") {
		if pod, ok := strings.CutPrefix(line, "answered by "); ok && podNode[pod] != "" {
			answered = fmt.Sprintf("%s (on %s)", pod, podNode[pod])
		}
	}
	// The script's own exit decides: a kubelet that ends the pod at its deadline just after the script answered
	// marks the pod Failed although the container exited 0.
	if exit != 0 || answered == "" {
		return fmt.Errorf("pod %s could not reach the Service by name (phase %s, exit code %d):\n%s", name, phase, exit, logs)
	}
	fmt.Fprintf(out, "by name from a pod: %s answered by %s\n", fqdn, answered)
	return nil
}

// agentJoinTime is how long the node's berth-agent took from its (last) start to reporting READY, which it does
// once its Node is Ready: systemd's monotonic timestamps of leaving inactive and entering active.
func agentJoinTime(ctx context.Context, ssh guestssh.Target) (time.Duration, error) {
	out, err := ssh.Run(ctx, "systemctl show -p InactiveExitTimestampMonotonic -p ActiveEnterTimestampMonotonic berth-agent", nil)
	if err != nil {
		return 0, err
	}
	var start, ready int64
	for _, line := range strings.Fields(out) {
		k, v, _ := strings.Cut(line, "=")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "InactiveExitTimestampMonotonic":
			start = n
		case "ActiveEnterTimestampMonotonic":
			ready = n
		}
	}
	if start == 0 || ready < start {
		return 0, fmt.Errorf("berth-agent has not become active since it started: %q", out)
	}
	return time.Duration(ready-start) * time.Microsecond, nil
}

// shippedLogs prints each hello pod's latest lines as the cloud's VictoriaLogs stored them (the log shipper's
// DaemonSet sent them, with the pod's metadata), how many journal entries each node shipped, and the query a user
// runs for more. It waits up to a minute for the requests the demo just made to arrive.
func shippedLogs(ctx context.Context, out io.Writer, st cloud.State, podNode map[string]string) error {
	ns := netns.NS{Name: st.Namespace}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext}}
	base := st.Analytics.LogsURL
	fmt.Fprintf(out, "\nlogs shipped by berth-logs (the DaemonSet) to VictoriaLogs at %s:\n", base)
	pods := slices.Sorted(maps.Keys(podNode))
	for _, pod := range pods {
		// The newest first; the demo's requests (url:/hostname) are the last lines each pod wrote.
		q := fmt.Sprintf(`k8s.namespace.name:=default k8s.pod.name:=%q "url:/hostname" | sort by (_time desc) | limit 3`, pod)
		var lines []map[string]string
		var err error
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			if lines, err = logsql.Query(ctx, httpc, base, q, 0); err == nil && len(lines) > 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no shipped lines of pod %s in VictoriaLogs after a minute (%v)", pod, err)
			}
		}
		fmt.Fprintf(out, "  pod %s, node %s, its latest lines:\n", pod, podNode[pod])
		for _, l := range slices.Backward(lines) {
			fmt.Fprintf(out, "    %s  %s\n", l["_time"], l["_msg"])
		}
	}
	counts, err := logsql.Query(ctx, httpc, base, `log.source:=journal | stats by (k8s.node.name) count() as entries`, 0)
	if err != nil {
		return err
	}
	slices.SortFunc(counts, func(a, b map[string]string) int { return strings.Compare(a["k8s.node.name"], b["k8s.node.name"]) })
	for _, c := range counts {
		fmt.Fprintf(out, "  journal of %s: %s entries (kubelet, containerd, berth-agent, ...)\n", c["k8s.node.name"], c["entries"])
	}
	fmt.Fprintf(out, "more with LogsQL, e.g. a pod's lines:\n  ip netns exec %s curl -s %s/select/logsql/query -d 'query=k8s.pod.name:hello* | sort by (_time) | limit 20'\n",
		st.Namespace, base)
	return nil
}

// scrapedMetrics prints what the cloud's VictoriaMetrics scraped from each node's log shipper: node_exporter's
// memory and load per node, and each hello pod's memory and CPU from the kubelet's Summary API, and the query for
// more. It waits up to a minute for every node and pod to be there.
func scrapedMetrics(ctx context.Context, out io.Writer, st cloud.State, podNode map[string]string) error {
	ns := netns.NS{Name: st.Namespace}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: ns.DialContext}}
	base := st.Analytics.MetricsURL
	byLabel := func(query, label string) (map[string]float64, error) {
		samples, err := cloud.QueryMetrics(ctx, httpc, base, query)
		if err != nil {
			return nil, err
		}
		m := map[string]float64{}
		for _, s := range samples {
			m[s.Metric[label]] = s.Value
		}
		return m, nil
	}
	var total, avail, load, podMem, podCPU map[string]float64
	var err error
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		total, err = byLabel("node_memory_MemTotal_bytes", "node")
		if err == nil {
			podMem, err = byLabel(`pod_memory_working_set_bytes{namespace="default",pod=~"hello-.*"}`, "pod")
		}
		if err == nil && len(total) == len(st.Nodes) && len(podMem) >= len(podNode) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("VictoriaMetrics has not scraped every node and hello pod after a minute: nodes %v, pods %v (%v)", total, podMem, err)
		}
	}
	if avail, err = byLabel("node_memory_MemAvailable_bytes", "node"); err != nil {
		return err
	}
	if load, err = byLabel("node_load1", "node"); err != nil {
		return err
	}
	if podCPU, err = byLabel(`pod_cpu_usage_seconds_total{namespace="default",pod=~"hello-.*"}`, "pod"); err != nil {
		return err
	}
	const mib = 1 << 20
	fmt.Fprintf(out, "\nmetrics scraped by VictoriaMetrics at %s from each node's berth-logs:\n", base)
	for _, n := range st.Nodes {
		fmt.Fprintf(out, "  node %s: memory %.0f MiB, %.0f MiB available, load %.2f (node_exporter)\n", n.Name, total[n.Name]/mib, avail[n.Name]/mib, load[n.Name])
	}
	for _, pod := range slices.Sorted(maps.Keys(podNode)) {
		fmt.Fprintf(out, "  pod %s: memory %.1f MiB, CPU %.2f s (the kubelet's Summary API)\n", pod, podMem[pod]/mib, podCPU[pod])
	}
	fmt.Fprintf(out, "more with PromQL, e.g. every pod's memory:\n  ip netns exec %s curl -s %s/api/v1/query -d 'query=pod_memory_working_set_bytes'\n", st.Namespace, base)
	return nil
}
