// Package node runs a real Kubernetes node on this host for fast tests: Debian's containerd and runc plus the
// pinned kubelet, joined to a control plane by TLS bootstrapping. It is the "host tier": only the daemon manager
// differs from production (processes here, systemd on a real node), so it never proves the systemd path.
//
// Everything a node writes stays in its own directory: containerd and the kubelet run in a private mount namespace
// with per-node directories bound over /var/lib, /var/log and /run, a per-node cgroup tree (berth-node-<name>) that
// also holds the pods (cgroupRoot), a per-node bridge and ports. Stop kills the whole cgroup tree, deletes the
// bridge and puts back what it changed on the host (net.ipv4.ip_forward, the node IP on lo).
//
// The host lacks CAP_SYS_RESOURCE and runs cgroup v1, so containerd gets restrict_oom_score_adj = true and the
// kubelet failCgroupV1: false. Those are explicit options here, not production defaults.
package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/agent/imagestore"
	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/layout"
)

// Config describes one node.
type Config struct {
	Name   string // node name (also names the bridge, cgroups and process group)
	Dir    string // per-node state; an absolute path not under /var/lib, /var/log or /run
	BinDir string // holds kubelet

	// Join material: the apiserver URL, the CA that signs it, and a bootstrap token.
	Server string
	CACert []byte
	Token  bootstraptoken.Token

	PodCIDR netip.Prefix // subnet of the node's bridge (host-local IPAM)
	// NodeIP, if set, is added as a /32 on lo and used as the kubelet's address, so the apiserver can reach the
	// kubelet (kubectl logs/exec). Without it the kubelet picks the host's address and only listens on loopback.
	NodeIP     netip.Addr
	ClusterDNS netip.Addr // default 10.96.0.10

	// Images are OCI image-layout tarballs "shipped" with the node: linked into Paths().ShippedImages, where the
	// agent's images phase imports them; Start (without the agent) imports them itself before the kubelet starts.
	Images       []string
	SandboxImage string // the pause image; must be among Images (no registry is reachable)

	Registry *proc.Registry
	Log      *slog.Logger
}

// Node is a running node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	reg      proc.Registry
	procs    *proc.Group
	host     hostState
	holder   *proc.Process // holds the mount namespace
	ports    [2]int        // kubelet port, healthz port
	restarts map[string]int
}

func (c *Config) validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("node: Name: required"))
	}
	if !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("node: Dir: %q must be an absolute path", c.Dir))
	}
	for _, shadowed := range []string{"/var/lib", "/var/log", "/run"} {
		if c.Dir == shadowed || strings.HasPrefix(c.Dir, shadowed+"/") {
			errs = append(errs, fmt.Errorf("node: Dir: %s is under %s, which the node's mount namespace replaces", c.Dir, shadowed))
		}
	}
	if _, err := os.Stat(filepath.Join(c.BinDir, "kubelet")); err != nil {
		errs = append(errs, fmt.Errorf("node: BinDir: %w", err))
	}
	if c.SandboxImage == "" {
		errs = append(errs, errors.New("node: SandboxImage: required"))
	}
	return errors.Join(errs...)
}

// Start brings the node up without the agent: Prepare, then the agent's renderers with the join material in cfg and
// the static PodCIDR, then containerd (with the images imported) and the kubelet. It returns once the kubelet runs;
// call WaitReady to wait for the Node object. On error, whatever it started is torn down.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	var errs []error
	if cfg.Server == "" {
		errs = append(errs, errors.New("node: Server: required"))
	}
	if len(cfg.CACert) == 0 {
		errs = append(errs, errors.New("node: CACert: required"))
	}
	if cfg.Token.IsZero() {
		errs = append(errs, errors.New("node: Token: required"))
	}
	if !cfg.PodCIDR.IsValid() || !cfg.PodCIDR.Addr().Is4() {
		errs = append(errs, fmt.Errorf("node: PodCIDR: %v: want an IPv4 prefix", cfg.PodCIDR))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	n, err := Prepare(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if serr := n.Stop(); serr != nil {
				n.log.Warn("teardown after failed start", "err", serr)
			}
		}
	}()
	if err := n.writeConfigs(); err != nil {
		return nil, err
	}
	if err := n.Start(ctx, layout.ContainerdUnit); err != nil {
		return nil, err
	}
	// What the agent's images phase does on a node: import the shipped images, pin the sandbox image.
	if _, err := imagestore.Ensure(ctx, imagestore.Config{Socket: n.ContainerdSocket(), ImageDir: n.Paths().ShippedImages,
		SandboxImage: cfg.SandboxImage, Log: n.log}); err != nil {
		return nil, err
	}
	if err := n.Start(ctx, layout.KubeletUnit); err != nil {
		return nil, err
	}
	n.log.Info("node started", "cgroup", n.host.Cgroup, "bridge", n.host.Bridge, "podCIDR", cfg.PodCIDR)
	return n, nil
}

// Prepare makes the node's place on this host (directories, cgroups, node IP, the mount namespace) without
// starting containerd or the kubelet: the agent does that through the node's Services (Start, Restart). On error,
// whatever it made is torn down.
func Prepare(ctx context.Context, cfg Config) (_ *Node, err error) {
	cfg.Log, cfg.Registry = proc.Defaults(cfg.Log, cfg.Registry)
	if !cfg.ClusterDNS.IsValid() {
		cfg.ClusterDNS = netip.MustParseAddr("10.96.0.10")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(cfg.Dir))
	id := hex.EncodeToString(sum[:4])
	n := &Node{cfg: cfg, log: cfg.Log.With("node", cfg.Name), reg: *cfg.Registry,
		procs:    &proc.Group{Registry: *cfg.Registry, Dir: cfg.Dir},
		host:     hostState{Dir: cfg.Dir, Cgroup: "berth-node-" + id, Bridge: "bn" + id},
		restarts: map[string]int{}}
	n.host.OwnerPID, n.host.OwnerStartTime = proc.Self()
	if err := sweepStale(n.reg, n.log); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if serr := n.Stop(); serr != nil {
				n.log.Warn("teardown after failed start", "err", serr)
			}
		}
	}()

	for _, d := range []string{"var-lib", "var-log", "run", "net.d", "etc", "images"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return nil, err
		}
	}
	// The images are "shipped" as on a baked image: the agent imports them (Start imports them itself).
	for _, img := range cfg.Images {
		abs, err := filepath.Abs(img)
		if err != nil {
			return nil, err
		}
		if err := os.Symlink(abs, n.path("images", filepath.Base(img))); err != nil && !os.IsExist(err) {
			return nil, err
		}
	}
	if err := n.prepareHost(); err != nil {
		return nil, err
	}
	if err := n.pickPorts(); err != nil {
		return nil, err
	}
	if err := n.writeResolvConf(); err != nil {
		return nil, err
	}

	// The mount namespace is held by a process that binds the per-node dirs and then sleeps; containerd and the
	// kubelet enter it with nsenter (which execs, keeping the pid this package records).
	ready := n.path("mountns.ready")
	os.Remove(ready)
	script := fmt.Sprintf("set -e; mount --bind %q /var/lib; mount --bind %q /var/log; mount --bind %q /run; touch %q; exec sleep infinity",
		n.path("var-lib"), n.path("var-log"), n.path("run"), ready)
	if n.holder, err = n.procs.Start("mountns", "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script); err != nil {
		return nil, err
	}
	if err := waitFile(ctx, ready, n.holder); err != nil {
		return nil, fmt.Errorf("mount namespace: %w", err)
	}
	return n, nil
}

// sweepStale cleans up what killed test runs left: their processes first, then their nodes' cgroups (shims,
// containers), bridges and addresses.
func sweepStale(reg proc.Registry, log *slog.Logger) error {
	if _, err := reg.Sweep(); err != nil {
		return err
	}
	return sweepHostStates(reg, log)
}

func (n *Node) path(parts ...string) string {
	return filepath.Join(append([]string{n.cfg.Dir}, parts...)...)
}

// ContainerdSocket is containerd's gRPC socket, reachable from the host.
func (n *Node) ContainerdSocket() string { return n.path("containerd.sock") }

// KubeconfigPath is the kubelet's kubeconfig, written by the kubelet after its TLS bootstrap.
func (n *Node) KubeconfigPath() string { return n.path("kubelet.conf") }

// LogPath is the log of a component: mountns, containerd, kubelet.
func (n *Node) LogPath(component string) string { return n.procs.LogPath(component) }

// prepareHost records what the node will change on the host (before changing it), then creates the node's
// cgroups and adds its node IP.
func (n *Node) prepareHost() error {
	fw, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return err
	}
	n.host.ForwardWas = strings.TrimSpace(string(fw))
	if n.cfg.NodeIP.IsValid() {
		n.host.NodeIP = n.cfg.NodeIP.String()
	}
	if err := n.host.record(n.reg); err != nil {
		return err
	}
	if err := createCgroups(n.host.Cgroup, n.host.Cgroup+"/pods"); err != nil {
		return err
	}
	if n.cfg.NodeIP.IsValid() {
		if out, err := exec.Command("ip", "addr", "replace", n.cfg.NodeIP.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
			return fmt.Errorf("add node IP %s to lo: %w: %s", n.cfg.NodeIP, err, out)
		}
	}
	return nil
}

func (n *Node) waitContainerd(ctx context.Context, p *proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if c, err := net.Dial("unix", n.ContainerdSocket()); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("containerd exited: %v; log:\n%s", p.ExitErr(), proc.Tail(p.Log, 20))
		case <-ctx.Done():
			return fmt.Errorf("containerd socket %s: %w; log:\n%s", n.ContainerdSocket(), ctx.Err(), proc.Tail(p.Log, 20))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitFile(ctx context.Context, path string, p *proc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited: %v; log:\n%s", p.Name, p.ExitErr(), proc.Tail(p.Log, 20))
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", path, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// WaitReady waits until the Node object reports Ready, failing early if the kubelet exits.
func (n *Node) WaitReady(ctx context.Context, cs kubernetes.Interface) (*corev1.Node, error) {
	kubelet := n.procs.Get("kubelet")
	if kubelet == nil {
		return nil, errors.New("kubelet is not running")
	}
	for {
		node, err := cs.CoreV1().Nodes().Get(ctx, n.cfg.Name, metav1.GetOptions{})
		if err == nil && nodeready.Ready(node) {
			return node, nil
		}
		select {
		case <-kubelet.Exited():
			return nil, fmt.Errorf("kubelet exited: %v; log:\n%s", kubelet.ExitErr(), proc.Tail(kubelet.Log, 30))
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s not Ready: %w; kubelet log:\n%s", n.cfg.Name, ctx.Err(), proc.Tail(kubelet.Log, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop tears the node down: kubelet, then containerd, then every process left in the node's cgroup tree (shims,
// containers), the mount namespace with it; then the cgroups, the bridge, and the host settings it changed.
func (n *Node) Stop() error {
	procs := n.procs.Take()
	var errs []error
	for _, name := range []string{"kubelet", "containerd"} {
		for _, p := range procs {
			if p.Name == name {
				errs = append(errs, p.Stop(10*time.Second))
			}
		}
	}
	// The cgroup tree goes before the mount-namespace holder: nothing in it may outlive the namespace's users.
	errs = append(errs, n.host.undo())
	for _, p := range procs {
		if p.Name != "kubelet" && p.Name != "containerd" {
			errs = append(errs, p.Stop(5*time.Second))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(statePath(n.reg, n.host.Cgroup)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
