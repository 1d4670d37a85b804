package join_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	devcp "berth.dev/berth/internal/dev/controlplane"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/imagestore"
	"berth.dev/berth/agent/join"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/agent/preflight"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/exitcode"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/node"
	"berth.dev/berth/test/toolbin"
)

func logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// hostNode is a prepared host-tier node plus the NodeConfig the agent reads from its drop-in directory.
type hostNode struct {
	n       *node.Node
	dir     string
	dropIns string
	cfg     join.Config
}

func prepare(t testing.TB, ctx context.Context, name string, imgs images.Built) *hostNode {
	t.Helper()
	dir := t.TempDir()
	n, err := node.Prepare(ctx, node.Config{Name: name, Dir: dir, BinDir: toolbin.Kubernetes.ForTest(t),
		Images: []string{imgs.Pause, imgs.Busybox}, SandboxImage: images.Pause, Log: logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"containerd", "kubelet"} {
				t.Logf("--- %s %s log (tail):\n%s", name, c, proc.Tail(n.LogPath(c), 30))
			}
		}
		if err := n.Stop(); err != nil {
			t.Errorf("stop node: %v", err)
		}
	})
	p, _ := distro.Get(node.Profile)
	h := &hostNode{n: n, dir: dir, dropIns: filepath.Join(dir, "config.d")}
	h.cfg = join.Config{Profile: p, Paths: n.Paths(), StateDir: filepath.Join(dir, "state"),
		DropInDir: h.dropIns, Services: n, Timeout: 2 * time.Minute, Log: logger()}
	return h
}

// load writes NodeConfig drop-ins (0600, as cloud-init does) and returns the merged config, tuned for this host.
func (h *hostNode) load(t testing.TB, files map[string]string) *nodeconfig.Config {
	t.Helper()
	for name, doc := range files {
		if err := os.MkdirAll(h.dropIns, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(h.dropIns, name), []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	srcs, err := config.DropIns(h.dropIns)
	if err != nil {
		t.Fatal(err)
	}
	merge := config.Merge
	if _, err := os.Stat(h.cfg.Paths.Kubeconfig); err == nil {
		merge = config.MergeJoined // the token was removed after the join
	}
	c, err := merge(srcs)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.n.Tune(&c.Spec); err != nil {
		t.Fatal(err)
	}
	nc, err := config.Internal(c, h.n.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// cluster starts a control plane for the test and builds the images nodes import.
func cluster(t testing.TB) (*controlplane.ControlPlane, controlplane.JoinInfo, images.Built) {
	t.Helper()
	cp := controlplane.ForTest(t, controlplane.Config{Log: logger()})
	ji, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := images.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return cp, ji, imgs
}

func nodeConfig(ji controlplane.JoinInfo, name, pin string) string {
	return `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: ` + ji.Endpoint + `
    discovery:
      token: ` + ji.Token.Value() + `
      caCertHashes: ["` + pin + `"]
  node:
    name: ` + name + `
    labels: {node.berth.dev/pool: default}
`
}

func phases(st *join.Status) map[string]join.PhaseStatus {
	m := map[string]join.PhaseStatus{}
	for _, p := range st.Phases {
		m[p.Name] = p
	}
	return m
}

// The host tier: the agent's discovery, rendering and waiting join a real kubelet and containerd to the real
// control plane; then a re-run with the same config restarts nothing, a changed kubelet setting restarts only the
// kubelet, and the token is gone from every file the node has.
func TestJoinHostTier(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, ji, imgs := cluster(t)
	h := prepare(t, ctx, "join-a", imgs)
	h.cfg.NodeConfig = h.load(t, map[string]string{"10-user-data.yaml": nodeConfig(ji, "join-a", string(ji.CACertPin))})

	start := time.Now()
	st, err := join.Run(ctx, h.cfg)
	if err != nil {
		t.Fatalf("join: %v\n%s", err, st.Format())
	}
	t.Logf("joined in %v:\n%s", time.Since(start).Round(time.Millisecond), st.Format())
	if st.Result != "joined" {
		t.Fatalf("result %q", st.Result)
	}
	n, err := cp.Client.CoreV1().Nodes().Get(ctx, "join-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["node.berth.dev/pool"] != "default" || n.Spec.PodCIDR == "" {
		t.Errorf("node labels %v, podCIDR %q", n.Labels, n.Spec.PodCIDR)
	}
	if _, err := os.Stat(h.cfg.Paths.BootstrapKubeconfig); !os.IsNotExist(err) {
		t.Errorf("bootstrap kubeconfig still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.cfg.StateDir, join.JoinedFile)); err != nil {
		t.Errorf("joined marker: %v", err)
	}
	assertNoToken(t, h.dir, ji.Token.Secret())
	// The shipped images were imported through containerd's client, and the sandbox image is pinned.
	if d := phases(st)["images"].Detail; !strings.Contains(d, "2 imported") || !strings.Contains(d, "sandbox image pinned") {
		t.Errorf("images phase: %q", d)
	}
	if out, err := exec.Command("ctr", "--address", h.cfg.Paths.ContainerdSocket, "-n", "k8s.io", "images", "ls", "name=="+images.Pause).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), imagestore.PinnedLabel+"=pinned") {
		t.Errorf("pause image not pinned: %v\n%s", err, out)
	}
	// Without its token the config is incomplete for a new node and complete for this joined one.
	if srcs, err := config.DropIns(h.dropIns); err != nil {
		t.Fatal(err)
	} else if _, err := config.Merge(srcs); err == nil || !strings.Contains(err.Error(), "spec.controlPlane.discovery.token: Required") {
		t.Errorf("scrubbed config as a new node's: %v", err)
	} else if _, err := config.MergeJoined(srcs); err != nil {
		t.Errorf("scrubbed config as a joined node's: %v", err)
	}

	// Same config again: nothing restarts, the kubelet keeps its pid.
	kubeletPID, _ := h.n.Running(layout.KubeletUnit)
	h.cfg.NodeConfig = h.load(t, nil)
	st, err = join.Run(ctx, h.cfg)
	if err != nil {
		t.Fatalf("re-run: %v\n%s", err, st.Format())
	}
	ps := phases(st)
	if ps["discover"].Result != "skipped" || ps["files"].Detail != "unchanged" || !strings.Contains(ps["images"].Detail, "2 shipped image(s) present, 0 imported") {
		t.Errorf("re-run did work again:\n%s", st.Format())
	}
	if pid, _ := h.n.Running(layout.KubeletUnit); pid != kubeletPID || h.n.Restarts(layout.KubeletUnit)+h.n.Restarts(layout.ContainerdUnit) != 0 {
		t.Errorf("unchanged re-run restarted something: kubelet pid %d → %d, restarts kubelet %d containerd %d",
			kubeletPID, pid, h.n.Restarts(layout.KubeletUnit), h.n.Restarts(layout.ContainerdUnit))
	}

	// A kubelet setting changes: only the kubelet restarts, and the Node shows the new value.
	h.cfg.NodeConfig = h.load(t, map[string]string{"50-pods.yaml": `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  kubelet:
    config: {maxPods: 42}
`})
	st, err = join.Run(ctx, h.cfg)
	if err != nil {
		t.Fatalf("changed run: %v\n%s", err, st.Format())
	}
	if h.n.Restarts(layout.KubeletUnit) != 1 || h.n.Restarts(layout.ContainerdUnit) != 0 {
		t.Errorf("restarts after a kubelet change: kubelet %d, containerd %d; want 1, 0", h.n.Restarts(layout.KubeletUnit), h.n.Restarts(layout.ContainerdUnit))
	}
	for {
		n, err := cp.Client.CoreV1().Nodes().Get(ctx, "join-a", metav1.GetOptions{})
		if err == nil && n.Status.Capacity.Pods().Value() == 42 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Node capacity never showed maxPods 42: %v", n.Status.Capacity)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got, err := join.ReadStatus(h.cfg.StateDir); err != nil || got.Result != "joined" {
		t.Errorf("status file: %+v, %v", got, err)
	}

	// A second node that claims the same name is refused while join-a is Ready, before it starts anything.
	h2 := prepare(t, ctx, "join-a", imgs)
	tok2, err := cp.MintToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.WaitTokenSigned(ctx, tok2.ID()); err != nil {
		t.Fatal(err)
	}
	ji2 := ji
	ji2.Token = tok2
	h2.cfg.NodeConfig = h2.load(t, map[string]string{"10-user-data.yaml": nodeConfig(ji2, "join-a", string(ji.CACertPin))})
	st, err = join.Run(ctx, h2.cfg)
	var je *join.Error
	if !errors.As(err, &je) || je.Code != exitcode.NameTaken {
		t.Fatalf("duplicate name: %v, want exit %d\n%s", err, exitcode.NameTaken, st.Format())
	}
	if _, running := h2.n.Running(layout.ContainerdUnit); running {
		t.Error("containerd was started for a refused join")
	}
	if _, err := os.Stat(filepath.Join(h2.cfg.StateDir, join.JoinedFile)); !os.IsNotExist(err) {
		t.Errorf("joined marker after a failed join: %v", err)
	}
}

// A wrong CA pin is refused with preflight's TLS exit code, and nothing is written or started.
func TestJoinWrongPin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, ji, imgs := cluster(t)
	h := prepare(t, ctx, "join-pin", imgs)
	h.cfg.NodeConfig = h.load(t, map[string]string{"10-user-data.yaml": nodeConfig(ji, "join-pin", "sha256:"+strings.Repeat("ab", 32))})
	st, err := join.Run(ctx, h.cfg)
	var je *join.Error
	if !errors.As(err, &je) || je.Code != int(preflight.ClassTLS) {
		t.Fatalf("wrong pin: %v, want exit %d", err, preflight.ClassTLS)
	}
	if _, err := os.Stat(h.cfg.Paths.KubeletConfig); !os.IsNotExist(err) {
		t.Errorf("files written after a refused discovery: %v", err)
	}
	if st.Result != "failed" || st.ExitCode != int(preflight.ClassTLS) || phases(st)["discover"].Result != "failed" {
		t.Errorf("status:\n%s", st.Format())
	}
}

// A control plane that is down when the agent starts and comes up later is joined without anyone stepping in.
func TestJoinWaitsForControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cpCfg := controlplane.Config{Dir: t.TempDir(), BinDir: toolbin.Kubernetes.ForTest(t), Log: logger()}
	cp, err := devcp.Start(ctx, cpCfg)
	if err != nil {
		t.Fatal(err)
	}
	ji, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	cpCfg = cp.Config()
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	imgs, err := images.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := prepare(t, ctx, "join-late", imgs)
	h.cfg.NodeConfig = h.load(t, map[string]string{"10-user-data.yaml": nodeConfig(ji, "join-late", string(ji.CACertPin))})
	h.cfg.BackoffInitial, h.cfg.BackoffMax = 200*time.Millisecond, time.Second
	retries := make(chan struct{}, 100)
	h.cfg.Log = slog.New(onMessage{slog.NewTextHandler(os.Stderr, nil), "control plane not reachable yet; retrying", retries})

	type result struct {
		st  *join.Status
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := join.Run(ctx, h.cfg)
		done <- result{st, err}
	}()
	// Three failed attempts, each reported as one to retry: the join waits rather than failing.
	for range 3 {
		select {
		case r := <-done:
			t.Fatalf("join finished while the control plane was down: %v", r.err)
		case <-retries:
		case <-ctx.Done():
			t.Fatal("no retry while the control plane was down")
		}
	}
	cp, err = devcp.Start(ctx, cpCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	r := <-done
	if r.err != nil {
		t.Fatalf("join after the control plane came back: %v\n%s", r.err, r.st.Format())
	}
	if d := phases(r.st)["discover"].Detail; !strings.Contains(d, "attempt") || strings.Contains(d, "attempt 1)") {
		t.Errorf("discover did not retry: %q", d)
	}
	n, err := cp.Client.CoreV1().Nodes().Get(ctx, "join-late", metav1.GetOptions{})
	if err != nil || !nodeready.Ready(n) {
		t.Errorf("node not Ready: %v", err)
	}
}

// assertNoToken fails if the token's secret is in any regular file under dir (logs, state, drop-ins, configs).
func assertNoToken(t *testing.T, dir, secret string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil && bytes.Contains(data, []byte(secret)) {
			t.Errorf("the token is still in %s", p)
		}
		return nil
	})
}

// onMessage is a slog handler that also signals on ch each time a record with message msg is handled.
type onMessage struct {
	slog.Handler
	msg string
	ch  chan<- struct{}
}

func (h onMessage) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h onMessage) WithAttrs(as []slog.Attr) slog.Handler {
	return onMessage{h.Handler.WithAttrs(as), h.msg, h.ch}
}

func (h onMessage) WithGroup(name string) slog.Handler {
	return onMessage{h.Handler.WithGroup(name), h.msg, h.ch}
}
