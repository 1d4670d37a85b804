// Command berth-dev runs berth's local development environment: a local hosted control plane that nodes join, and
// the local cloud (the control plane in a network namespace, qemu guests from a baked image joined to it).
//
//	berth-dev image -agent AGENT     bake the local cloud's node image and print its path
//	berth-dev cloud up -image IMG    bring up the local cloud, detached, and wait for its Nodes to be Ready
//	berth-dev cloud demo             deploy a workload behind a NodePort and show every node reaching every pod
//	berth-dev cloud status           its guests and Nodes
//	berth-dev cloud down             stop it and delete its namespace
//
//	berth-dev controlplane up        start (or restart) it, detached, and print the join material
//	berth-dev controlplane join-info print the join material again (text, json or a kubeadm join line)
//	berth-dev controlplane status    is it running and ready
//	berth-dev controlplane down      stop it (by its own process records, never by process name)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"berth.dev/berth/internal/dev/controlplane"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/dev/toolcache"
)

const usage = `usage: berth-dev controlplane <up|down|status|join-info> [flags]
       berth-dev cloud <up|down|status|demo> [flags]
       berth-dev image -agent BERTH_AGENT [-o DIR]
       berth-dev deb -agent BERTH_AGENT [-o DIR] [-version V]

  up         start a local hosted control plane (detached) and print its join material
  down       stop it
  status     report whether it runs and is ready
  join-info  print the join material: endpoint, bootstrap token, CA pin

Run "berth-dev controlplane <command> -h" for the flags of each.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(ctx, os.Args[1:], os.Stdout, log); err != nil {
		fmt.Fprintln(os.Stderr, "berth-dev:", err)
		os.Exit(1)
	}
}

func defaultDir() string {
	if d := os.Getenv("BERTH_DEV_DIR"); d != "" {
		return filepath.Join(d, "controlplane")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".local", "state", "berth", "controlplane")
}

const k8sBinUsage = "directory with the pinned Kubernetes binaries and etcd (env BERTH_K8S_BIN; default: the newest complete build of v" +
	toolcache.KubernetesVersion + " in the tool cache, $BERTH_CACHE or ~/.cache/berth, which `make tools` fills)"

// k8sBin returns dir, or the pinned Kubernetes build in the tool cache when dir is empty.
func k8sBin(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	return toolcache.Find(toolcache.Dir(), "k8s", toolcache.KubernetesVersion)
}

func run(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) > 0 && args[0] == "cloud" {
		return cloudCmd(ctx, args[1:], out, log)
	}
	if len(args) > 0 && args[0] == "image" {
		return imageCmd(ctx, args[1:], out, log)
	}
	if len(args) > 0 && args[0] == "deb" {
		return debCmd(args[1:], out)
	}
	if len(args) < 2 || args[0] != "controlplane" {
		fmt.Fprint(os.Stderr, usage)
		return errors.New("missing or unknown command")
	}
	cmd := args[1]
	fs := flag.NewFlagSet("berth-dev controlplane "+cmd, flag.ContinueOnError)
	dir := fs.String("dir", defaultDir(), "state directory: PKI, etcd data, kubeconfigs, logs (env BERTH_DEV_DIR/controlplane)")
	reg := proc.DefaultRegistry(log)
	switch cmd {
	case "up":
		bind := fs.String("bind", "127.0.0.1", "address the apiserver binds to and advertises")
		port := fs.Int("port", 6443, "apiserver port")
		nsPath := fs.String("netns", "", "network namespace to run in (e.g. /run/netns/berth); default: this one")
		bin := fs.String("k8s-bin", os.Getenv("BERTH_K8S_BIN"), k8sBinUsage)
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		addr, err := netip.ParseAddr(*bind)
		if err != nil {
			return fmt.Errorf("--bind: %w", err)
		}
		if *bin, err = k8sBin(*bin); err != nil {
			return err
		}
		cp, err := controlplane.Start(ctx, controlplane.Config{Dir: *dir, BinDir: *bin, BindAddress: addr,
			APIServerPort: *port, NetNS: *nsPath, Detached: true, Registry: &reg, Log: log})
		if err != nil {
			return err
		}
		ji, err := cp.JoinInfo()
		if err != nil {
			return err
		}
		printJoinInfo(out, ji, cp.KubeconfigPath(), *dir, filepath.Join(*bin, "kubectl"))
		return nil
	case "down":
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		n, err := controlplane.Down(*dir, reg)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "stopped %d control-plane processes (%s)\n", n, *dir)
		return nil
	case "status":
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		return status(ctx, out, *dir, reg)
	case "join-info":
		format := fs.String("o", "text", "output: text, json or kubeadm (a kubeadm join command line)")
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		ji, err := controlplane.ReadJoinInfo(*dir)
		if err != nil {
			return fmt.Errorf("no join material in %s (run `berth-dev controlplane up`): %w", *dir, err)
		}
		switch *format {
		case "text":
			printJoinInfo(out, ji, filepath.Join(*dir, "admin.conf"), *dir, "kubectl")
		case "json":
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(map[string]any{"endpoint": ji.Endpoint, "token": ji.Token.Value(), "caCertPin": ji.CACertPin, "expires": ji.Expires})
		case "kubeadm":
			fmt.Fprintf(out, "kubeadm join %s --token %s --discovery-token-ca-cert-hash %s\n",
				strings.TrimPrefix(ji.Endpoint, "https://"), ji.Token.Value(), ji.CACertPin)
		default:
			return fmt.Errorf("-o %q: want text, json or kubeadm", *format)
		}
		return nil
	default:
		fmt.Fprint(os.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// printJoinInfo prints the join material for the operator. The token is printed on purpose: handing it to a node
// is this command's job; it goes to stdout, never to the log.
func printJoinInfo(out io.Writer, ji controlplane.JoinInfo, kubeconfig, dir, kubectl string) {
	fmt.Fprintf(out, "endpoint:    %s\n", ji.Endpoint)
	fmt.Fprintf(out, "token:       %s\n", ji.Token.Value())
	fmt.Fprintf(out, "ca-cert-pin: %s\n", ji.CACertPin)
	fmt.Fprintf(out, "expires:     %s\n", ji.Expires.Format(time.RFC3339))
	self, err := os.Executable()
	if err != nil {
		self = "berth-dev"
	}
	fmt.Fprintf(out, "\n%s --kubeconfig %s get nodes\n", kubectl, kubeconfig)
	fmt.Fprintf(out, "stop it with: %s controlplane down --dir %s\n", self, dir)
}

func status(ctx context.Context, out io.Writer, dir string, reg proc.Registry) error {
	abs, _ := filepath.Abs(dir)
	recs, _, err := reg.Records()
	if err != nil {
		return err
	}
	running := 0
	for _, r := range recs {
		if r.Group == abs && r.Running() {
			running++
			fmt.Fprintf(out, "%-24s pid %-7d log %s\n", r.Name, r.PID, r.Log)
		}
	}
	if running == 0 {
		return fmt.Errorf("no control plane runs from %s", abs)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(abs, "admin.conf"))
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
	if err != nil {
		return fmt.Errorf("apiserver at %s is not ready: %w", cfg.Host, err)
	}
	fmt.Fprintf(out, "apiserver %s: readyz %s\n", cfg.Host, body)
	return nil
}
