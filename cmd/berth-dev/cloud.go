package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/agent/lb/lbstatus"
	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/deploy"
	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/clusterdns"
	"berth.dev/berth/internal/dev/guestssh"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/dev/toolcache"
)

const cloudUsage = `usage: berth-dev cloud <up|down|status|demo> [flags]

  up      bring up the local cloud (detached): a network namespace with a bridge, the control plane inside it,
          and -nodes qemu guests from -image that join it; waits until every Node is Ready
  down    stop the guests and the control plane and delete the namespace
  status  report the guests, their Nodes and the control plane
  demo    deploy a workload behind a NodePort and show requests through every node reaching pods on every node
`

func defaultCloudDir() string { return filepath.Join(filepath.Dir(defaultDir()), "cloud") }

// cloudCmd runs `berth-dev cloud <up|down|status>`.
func cloudCmd(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) < 1 {
		fmt.Fprint(os.Stderr, cloudUsage)
		return errors.New("missing cloud command")
	}
	fs := flag.NewFlagSet("berth-dev cloud "+args[0], flag.ContinueOnError)
	dir := fs.String("dir", defaultCloudDir(), "state directory: control plane, guest overlays, SSH key, cloud.json")
	reg := proc.DefaultRegistry(log)
	switch args[0] {
	case "up":
		image := fs.String("image", "", "the node image every guest boots (qcow2), e.g. output-debian-12/node.qcow2 (required)")
		nodes := fs.Int("nodes", 2, "how many guests")
		name := fs.String("name", "cloud", "the namespace is berth-<name>")
		bin := fs.String("k8s-bin", os.Getenv("BERTH_K8S_BIN"), k8sBinUsage)
		reuse := fs.Bool("reuse", false, "keep a cloud already running in -dir from the same image file with -nodes Ready nodes")
		agent := fs.String("agent", "", "the berth-agent binary the load balancer's hosts and controller run (required)")
		vmetrics := fs.String("victoria-metrics", "victoria-metrics", "the victoria-metrics binary, the cloud's metrics scraper (Debian's package; make deps installs it)")
		vlogs := fs.String("victorialogs-bin", os.Getenv("BERTH_VICTORIALOGS_BIN"), "directory of the pinned victoria-logs, the cloud's log backend (default: the tool cache's; env BERTH_VICTORIALOGS_BIN)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *image == "" {
			return errors.New("cloud up: -image: required")
		}
		if *agent == "" {
			return errors.New("cloud up: -agent: required (the berth-agent binary the load balancer runs; `make agent` prints it)")
		}
		if abs, err := filepath.Abs(*agent); err == nil {
			*agent = abs
		}
		if *nodes < 1 {
			return fmt.Errorf("cloud up: -nodes: %d: want at least 1", *nodes)
		}
		var err error
		if *bin, err = k8sBin(*bin); err != nil {
			return err
		}
		if *vmetrics, err = exec.LookPath(*vmetrics); err != nil {
			return fmt.Errorf("cloud up: -victoria-metrics: %w (Debian's victoria-metrics package; `make deps` installs it)", err)
		}
		if *vlogs == "" {
			if *vlogs, err = toolcache.Find(toolcache.Dir(), "victorialogs", toolcache.VictoriaLogsVersion); err != nil {
				return fmt.Errorf("cloud up: -victorialogs-bin: %w", err)
			}
		}
		if *reuse {
			why := reusable(ctx, *dir, *image, *nodes, reg)
			if why == "" {
				fmt.Fprintf(out, "reusing the cloud in %s: %d nodes Ready, booted from this image\n", *dir, *nodes)
				fmt.Fprintf(out, "  export KUBECONFIG=%s\n", filepath.Join(*dir, "kubeconfig"))
				return nil
			}
			fmt.Fprintf(out, "not reusing the cloud in %s: %s\n", *dir, why)
		}
		// A cloud left in dir is replaced: bringing it up again is how a user starts over.
		if err := cloud.Down(*dir, reg); err != nil {
			return fmt.Errorf("cloud up: stop the earlier cloud in %s: %w", *dir, err)
		}
		return cloudUp(ctx, out, cloud.Config{Name: *name, Dir: *dir, BinDir: *bin, Image: *image, Detached: true, Registry: &reg, Log: log}, reg, *nodes, *agent,
			cloud.AnalyticsConfig{VictoriaLogs: filepath.Join(*vlogs, "victoria-logs"), VictoriaMetrics: *vmetrics})
	case "down":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := cloud.Down(*dir, reg); err != nil {
			return err
		}
		fmt.Fprintf(out, "cloud in %s is down\n", *dir)
		return nil
	case "status":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return cloudStatus(ctx, out, *dir, reg)
	case "demo":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return cloudDemo(ctx, out, *dir)
	case "forward":
		return forwardCmd(ctx, args[1:], log)
	default:
		fmt.Fprint(os.Stderr, cloudUsage)
		return fmt.Errorf("unknown cloud command %q", args[0])
	}
}

// cloudUp boots the guests one at a time (TCG guests share two cores), then waits for every Node to be Ready,
// printing progress, and prints how to use and stop the cloud.
func cloudUp(ctx context.Context, out io.Writer, cfg cloud.Config, reg proc.Registry, nodes int, agent string, analytics cloud.AnalyticsConfig) (err error) {
	c, err := cloud.Up(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.Down()
			reg.StopGroup(c.Config().Dir, 5*time.Second) // the apiserver forward, when it started
		}
	}()
	fmt.Fprintf(out, "control plane up at %s in namespace %s\n", c.CP.Endpoint, c.NS.Name)
	for range nodes {
		n, err := c.AddNode(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s (%s) booting (a TCG guest takes about a minute)...\n", n.Name, n.IP)
		stop := every(30*time.Second, func(took time.Duration) {
			fmt.Fprintf(out, "%s still booting (%v; console %s)\n", n.Name, took.Round(time.Second), n.Serial)
		})
		err = n.WaitSSH(ctx)
		stop()
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s booted in %v\n", n.Name, time.Since(n.Started).Round(time.Second))
	}
	for _, n := range c.Nodes {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		stop := every(20*time.Second, func(took time.Duration) {
			fmt.Fprintf(out, "%s joining: %s\n", n.Name, joinProgress(ctx, n.SSH))
		})
		node, err := c.WaitJoined(wctx, n, 2*time.Second)
		stop()
		cancel()
		if err != nil {
			return err
		}
		// The condition's transition, not now: the nodes are waited for in turn.
		fmt.Fprintf(out, "%s Ready %v after its guest started (kubelet %s)\n", n.Name,
			nodeready.Condition(node).LastTransitionTime.Sub(n.Started).Round(time.Second), node.Status.NodeInfo.KubeletVersion)
	}
	// The cloud's route table: pods' replies from the control plane (CoreDNS watches the API) find their node.
	if err := c.RoutePods(ctx); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err = clusterdns.WaitAvailable(wctx, c.CP.Client)
	cancel()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "cluster DNS ready: %s.%s at %s (CoreDNS)\n", clusterdns.Service, metav1.NamespaceSystem,
		clusterdns.ServiceIP(c.CP.Config().ServiceCIDR))
	lb, err := c.StartLB(ctx, cloud.LBConfig{Agent: agent})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "load balancer: %d LB hosts, frontend IPs from %s for Services of type LoadBalancer, a client in namespace %s\n",
		len(lb.Hosts), lb.Pool, lb.Client.Name)
	fmt.Fprintf(out, "deploying the log shipper (deploy/logs.yaml, a DaemonSet) to ship to the cloud's VictoriaLogs...\n")
	an, err := c.StartAnalytics(ctx, analytics)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "log analytics: VictoriaLogs at %s in the namespace; the log shipper runs on every node\n", an.LogsURL)
	fmt.Fprintf(out, "metrics: VictoriaMetrics at %s scrapes every node's log shipper (node_exporter, pods' CPU and memory)\n", an.MetricsURL)
	fmt.Fprintf(out, "starting the file servers and deploying the share drivers' provisioner (deploy/shares.yaml)...\n")
	sh, err := c.StartShares(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "file shares: SMB %s (StorageClass %s) and NFS %s (StorageClass %s); a claim of either is a directory on the share\n",
		sh.SMBSource, cloud.SMBClass, sh.NFSSource, cloud.NFSClass)
	kubeconfig, err := publishAPIServer(ctx, c, reg)
	if err != nil {
		return err
	}
	self, _ := os.Executable()
	fmt.Fprintf(out, "\nThe cloud keeps running. Its apiserver is forwarded to this host's loopback:\n")
	fmt.Fprintf(out, "  export KUBECONFIG=%s\n", kubeconfig)
	fmt.Fprintf(out, "  %s get nodes -o wide\n", kubectlCommand(filepath.Join(cfg.BinDir, "kubectl")))
	fmt.Fprintf(out, "The nodes are reachable inside its namespace:\n")
	fmt.Fprintf(out, "  ip netns exec %s ssh -i %s root@%s\n", c.NS.Name, c.Nodes[0].SSH.Key, c.Nodes[0].IP)
	fmt.Fprintf(out, "Stop it with: %s cloud down --dir %s\n", self, c.Config().Dir)
	return nil
}

// every calls say with the time since it started, every period, until stop is called; stop returns once say is
// no longer running.
func every(period time.Duration, say func(took time.Duration)) (stop func()) {
	start, done, exited := time.Now(), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				say(time.Since(start))
			}
		}
	}()
	return func() { close(done); <-exited }
}

// joinProgress summarizes the node's `berth-agent status`: the last phase it reached and that phase's result.
func joinProgress(ctx context.Context, ssh guestssh.Target) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := ssh.Run(ctx, "berth-agent status", nil)
	if err != nil {
		return "the agent has no status yet"
	}
	lines := strings.Split(strings.TrimSpace(st), "\n")
	header := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "PHASE") })
	if header < 0 || header == len(lines)-1 {
		return "the agent has started no phase yet"
	}
	last := strings.Fields(lines[len(lines)-1])
	return fmt.Sprintf("agent phase %s: %s (%d phases so far)", last[0], strings.Join(last[1:2], ""), len(lines)-1-header)
}

// reusable says why the cloud in dir cannot serve as one of nodes guests from image, or "" when it can: it runs,
// it came up from this very image file (a new bake replaces the file), and every guest runs with its Node Ready.
func reusable(ctx context.Context, dir, image string, nodes int, reg proc.Registry) string {
	st, err := cloud.Load(dir)
	if err != nil {
		return "no cloud there"
	}
	abs, _ := filepath.Abs(image)
	id, err := cloud.ImageID(abs)
	switch {
	case err != nil:
		return err.Error()
	case st.Image != abs || st.ImageID != id:
		return "it runs another image, or an older bake of this one"
	case len(st.Nodes) != nodes:
		return fmt.Sprintf("it has %d nodes, not %d", len(st.Nodes), nodes)
	case st.LB == nil:
		return "it has no load balancer"
	case st.Analytics == nil:
		return "it has no log analytics service"
	}
	if err := cloudStatus(ctx, io.Discard, dir, reg); err != nil {
		return "it is not healthy: " + strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	return ""
}

// cloudStatus prints each guest's process and Node, and fails unless all of them run and are Ready.
func cloudStatus(ctx context.Context, out io.Writer, dir string, reg proc.Registry) error {
	dir, _ = filepath.Abs(dir)
	st, err := cloud.Load(dir)
	if err != nil {
		return fmt.Errorf("no cloud in %s (run `berth-dev cloud up`): %w", dir, err)
	}
	recs, _, err := reg.Records()
	if err != nil {
		return err
	}
	running := groupPIDs(recs, dir)
	cs, err := cloud.AdminClient(dir, st)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "namespace %s, control plane %s\n", st.Namespace, st.Endpoint)
	var errs []error
	for _, n := range st.Nodes {
		guest := "not running"
		if pid, ok := running[n.Name]; ok {
			guest = fmt.Sprintf("pid %d", pid)
		} else {
			errs = append(errs, fmt.Errorf("%s: its guest is not running", n.Name))
		}
		ready := "unknown"
		if node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err != nil {
			ready = err.Error()
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
		} else if nodeready.Ready(node) {
			ready = "Ready"
		} else {
			ready = "NotReady"
			errs = append(errs, fmt.Errorf("%s: NotReady", n.Name))
		}
		fmt.Fprintf(out, "%-8s %-12s guest %-12s node %s\n", n.Name, n.IP, guest, ready)
	}
	if st.LB != nil {
		lbRunning := groupPIDs(recs, st.LB.Dir)
		if _, ok := lbRunning["lb-controller"]; !ok {
			errs = append(errs, errors.New("the load balancer's controller is not running"))
		}
		fmt.Fprintf(out, "load balancer: frontend pool %s, client namespace %s\n", st.LB.Pool, st.LB.Client)
		for i := range st.LB.Hosts {
			name := fmt.Sprintf("lb-%d", i+1)
			pid, ok := lbRunning[name]
			if !ok {
				errs = append(errs, fmt.Errorf("%s is not running", name))
				fmt.Fprintf(out, "%-8s not running\n", name)
				continue
			}
			announced := "status unknown"
			if hs, err := lbstatus.Read(filepath.Join(st.LB.Dir, name+".json")); err == nil {
				announced = "announcing " + strings.Join(hs.Announced, ", ")
				if len(hs.Announced) == 0 {
					announced = "announcing nothing"
				}
			}
			fmt.Fprintf(out, "%-8s pid %-8d %s\n", name, pid, announced)
		}
	}
	if st.Analytics != nil {
		pids := groupPIDs(recs, st.Analytics.Dir)
		errs = append(errs, notRunning(pids, "the analytics service's", "victoria-logs", "victoria-metrics")...)
		shipping := "unknown"
		if ds, err := cs.AppsV1().DaemonSets(metav1.NamespaceSystem).Get(ctx, deploy.LogsConfigMap, metav1.GetOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("the log shipper: %w", err))
		} else {
			shipping = fmt.Sprintf("%d of %d pods ready", ds.Status.NumberReady, ds.Status.DesiredNumberScheduled)
			if ds.Status.NumberReady != ds.Status.DesiredNumberScheduled || int(ds.Status.DesiredNumberScheduled) != len(st.Nodes) {
				errs = append(errs, fmt.Errorf("the log shipper: %s on %d nodes", shipping, len(st.Nodes)))
			}
		}
		fmt.Fprintf(out, "logs: victoria-logs pid %d at %s, log shipper %s\n", pids["victoria-logs"], st.Analytics.LogsURL, shipping)
		fmt.Fprintf(out, "metrics: victoria-metrics pid %d at %s\n", pids["victoria-metrics"], st.Analytics.MetricsURL)
	}
	if st.Shares != nil {
		pids := groupPIDs(recs, st.Shares.Dir)
		errs = append(errs, notRunning(pids, "the file server", "smbd", "ganesha")...)
		provisioner := "unknown"
		if d, err := cs.AppsV1().Deployments(metav1.NamespaceSystem).Get(ctx, "berth-shares-provisioner", metav1.GetOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("the shares provisioner: %w", err))
		} else {
			provisioner = fmt.Sprintf("%d of %d pods ready", d.Status.ReadyReplicas, d.Status.Replicas)
			if d.Status.ReadyReplicas == 0 {
				errs = append(errs, fmt.Errorf("the shares provisioner: %s", provisioner))
			}
		}
		fmt.Fprintf(out, "shares: smbd pid %d serving %s, ganesha pid %d serving %s, provisioner %s\n",
			pids["smbd"], st.Shares.SMB, pids["ganesha"], st.Shares.NFS, provisioner)
	}
	return errors.Join(errs...)
}

// groupPIDs are the pids of group's running processes, by name.
func groupPIDs(recs []proc.Record, group string) map[string]int {
	pids := map[string]int{}
	for _, r := range recs {
		if r.Group == group && r.Running() {
			pids[r.Name] = r.PID
		}
	}
	return pids
}

// notRunning is an error for each of names without a pid, each named after what.
func notRunning(pids map[string]int, what string, names ...string) []error {
	var errs []error
	for _, name := range names {
		if pids[name] == 0 {
			errs = append(errs, fmt.Errorf("%s %s is not running", what, name))
		}
	}
	return errs
}
