package join_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/imagestore"
	"berth.dev/berth/agent/join"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/preflight"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/exitcode"
	"berth.dev/berth/internal/node/layout"
)

// The unit tier of the join: its own logic (what it skips, what it restarts, which exit code a failure gets)
// through its seams (Services, Discover, NewClient, Images), with fakes standing in for systemd, the control plane
// and containerd. The host tier (join_test.go) and the e2e tier run the same phases against the real ones.

const seamToken = "abcdef.0123456789abcdef"

// seamCA is the fake control plane's CA (a real certificate: a joined node checks the one on its disk against the
// pins) and its pin, made once per test binary.
var seamCA = sync.OnceValues(func() ([]byte, capin.Pin) { return newCA("seam CA") })

func newCA(name string) ([]byte, capin.Pin) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), capin.Of(cert)
}

// services records the calls the join makes; starting the kubelet "finishes its TLS bootstrap" by writing the
// kubelet's kubeconfig, as the real kubelet does once its CSR is approved.
type services struct {
	t          *testing.T
	kubeconfig string
	calls      []string
	fail       map[string]error // unit → error of its start or restart
}

func (s *services) Reload(context.Context) error { s.calls = append(s.calls, "reload"); return nil }
func (s *services) Start(_ context.Context, unit string) error {
	return s.do("start " + unit)
}
func (s *services) Restart(_ context.Context, unit string) error {
	return s.do("restart " + unit)
}

func (s *services) do(call string) error {
	s.calls = append(s.calls, call)
	unit := strings.Fields(call)[1]
	if err := s.fail[unit]; err != nil {
		return err
	}
	if unit == layout.KubeletUnit {
		kc := clientcmdapi.NewConfig()
		kc.Clusters["c"] = &clientcmdapi.Cluster{Server: "https://cp.invalid:6443"}
		kc.AuthInfos["kubelet"] = &clientcmdapi.AuthInfo{Token: "kubelet-credentials"}
		kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "kubelet"}
		kc.CurrentContext = "c"
		if err := clientcmd.WriteToFile(*kc, s.kubeconfig); err != nil {
			s.t.Fatal(err)
		}
	}
	return nil
}

// fakeCluster is the fake control plane: the bootstrap token sees Node bootstrapNode (nil: none), the kubelet's
// credentials see the Node with a podCIDR and Ready.
type fakeCluster struct {
	bootstrapErr  error
	bootstrapNode *corev1.Node
}

func fakeNode(name string, ready corev1.ConditionStatus) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24"},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
}

func (c *fakeCluster) client(cfg *rest.Config) (kubernetes.Interface, error) {
	if cfg.BearerToken == seamToken {
		var objs []runtime.Object
		if c.bootstrapNode != nil {
			objs = append(objs, c.bootstrapNode)
		}
		cs := fake.NewClientset(objs...)
		if c.bootstrapErr != nil {
			cs.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, c.bootstrapErr })
		}
		return cs, nil
	}
	return fake.NewClientset(fakeNode("node-1", corev1.ConditionTrue)), nil
}

type seamNode struct {
	cfg       join.Config
	svc       *services
	cluster   *fakeCluster
	discovers int
}

func newSeamNode(t *testing.T, labels string) *seamNode {
	t.Helper()
	dir := t.TempDir()
	p := layout.Default()
	for _, f := range []*string{&p.CACert, &p.BootstrapKubeconfig, &p.Kubeconfig, &p.KubeletConfig, &p.KubeletCertDir,
		&p.KubeletDropIn, &p.KubeProxyConfig, &p.KubeProxyDropIn, &p.ContainerdConfig, &p.ContainerdSocket,
		&p.RegistryHostsDir, &p.CNIConfDir, &p.Sysctls, &p.ShippedImages} {
		*f = filepath.Join(dir, "root", *f)
	}
	profile, err := distro.Get("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	n := &seamNode{svc: &services{t: t, kubeconfig: p.Kubeconfig}, cluster: &fakeCluster{}}
	n.cfg = join.Config{NodeConfig: nodeConfigFor(t, labels), Profile: profile, Paths: p, StateDir: filepath.Join(dir, "state"),
		Services: n.svc, Timeout: 5 * time.Second, BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler), NewClient: n.cluster.client,
		Discover: func(context.Context, nodeconfig.ControlPlane, bootstraptoken.Token, preflight.Options) (preflight.Result, error) {
			n.discovers++
			ca, _ := seamCA()
			return preflight.Result{CA: ca, Passed: []string{"fake"}}, nil
		},
		Images: func(context.Context, imagestore.Config) (imagestore.Result, error) {
			return imagestore.Result{Pinned: true}, nil
		},
	}
	return n
}

func nodeConfigFor(t *testing.T, labels string) *nodeconfig.Config {
	t.Helper()
	_, pin := seamCA()
	doc := `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://cp.invalid:6443
    discovery:
      token: ` + seamToken + `
      caCertHashes: ["` + string(pin) + `"]
  node:
    name: node-1
    labels: {` + labels + `}
`
	c, err := config.Merge([]config.Source{{Name: "test.yaml", Data: []byte(doc)}})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := config.Internal(c, nodeconfig.Defaults{Hostname: "unused"})
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

func (n *seamNode) run(t *testing.T) (*join.Status, error) {
	t.Helper()
	n.svc.calls = nil
	return join.Run(context.Background(), n.cfg)
}

func (n *seamNode) mustJoin(t *testing.T) *join.Status {
	t.Helper()
	st, err := n.run(t)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	return st
}

func phaseResults(st *join.Status) string {
	var out []string
	for _, p := range st.Phases {
		out = append(out, p.Name+"="+p.Result)
	}
	return strings.Join(out, " ")
}

// A first join runs every phase; a re-run on the joined node skips discovery and the name check (no bootstrap
// token is needed any more), changes no file and restarts nothing.
func TestJoinedNodeSkipsDiscovery(t *testing.T) {
	n := newSeamNode(t, "a: b")
	st := n.mustJoin(t)
	if n.discovers != 1 || st.Result != "joined" {
		t.Fatalf("first join: %d discoveries, result %s (%s)", n.discovers, st.Result, phaseResults(st))
	}
	// Every file is new, so every unit restarts onto it (the image's containerd already runs on its default config).
	first := []string{"reload", "restart " + layout.ContainerdUnit, "restart " + layout.KubeletUnit, "restart " + layout.KubeProxyUnit}
	if !slices.Equal(n.svc.calls, first) {
		t.Errorf("first join's calls %v, want %v", n.svc.calls, first)
	}
	if _, err := os.Stat(n.cfg.Paths.BootstrapKubeconfig); !os.IsNotExist(err) {
		t.Errorf("bootstrap kubeconfig left after the join: %v", err)
	}

	st = n.mustJoin(t)
	if n.discovers != 1 {
		t.Errorf("the joined node ran discovery again (%d discoveries)", n.discovers)
	}
	got := map[string]join.PhaseStatus{}
	for _, p := range st.Phases {
		got[p.Name] = p
	}
	if got["discover"].Result != "skipped" || got["name"].Result != "skipped" {
		t.Errorf("re-run phases: %s; want discover and name skipped", phaseResults(st))
	}
	if got["files"].Detail != "unchanged" {
		t.Errorf("re-run files: %q, want unchanged", got["files"].Detail)
	}
	want := []string{"start " + layout.ContainerdUnit, "start " + layout.KubeletUnit, "start " + layout.KubeProxyUnit}
	if !slices.Equal(n.svc.calls, want) {
		t.Errorf("re-run calls %v, want only starts %v", n.svc.calls, want)
	}
}

// A run killed between writing a changed file and restarting its unit leaves the restart pending: the next run
// finds the files already written, and still restarts the kubelet (after a daemon-reload for its drop-in).
func TestPendingRestartSurvivesAKill(t *testing.T) {
	n := newSeamNode(t, "a: b")
	n.mustJoin(t)

	n.cfg.NodeConfig = nodeConfigFor(t, "a: c") // a new label: the kubelet's drop-in changes
	killed := errors.New("killed")
	n.cfg.BeforePhase = func(phase string) {
		if phase == "containerd" {
			panic(killed)
		}
	}
	func() {
		defer func() {
			if r := recover(); r != killed {
				t.Fatalf("the run was not killed at containerd: %v", r)
			}
		}()
		_, _ = n.run(t)
	}()
	if len(n.svc.calls) != 0 {
		t.Fatalf("the killed run reached systemd: %v", n.svc.calls)
	}

	n.cfg.BeforePhase = nil
	st := n.mustJoin(t)
	for _, p := range st.Phases {
		if p.Name == "files" && p.Detail != "unchanged" {
			t.Errorf("files after the kill: %q, want nothing left to write", p.Detail)
		}
	}
	want := []string{"reload", "start " + layout.ContainerdUnit, "restart " + layout.KubeletUnit, "start " + layout.KubeProxyUnit}
	if !slices.Equal(n.svc.calls, want) {
		t.Errorf("calls after the kill %v, want %v", n.svc.calls, want)
	}
	// Done once: a further run restarts nothing.
	n.mustJoin(t)
	if slices.ContainsFunc(n.svc.calls, func(c string) bool { return strings.HasPrefix(c, "restart") || c == "reload" }) {
		t.Errorf("restarts still pending: %v", n.svc.calls)
	}
}

// Each failure class ends the run with its own exit code (docs/exit-codes.md), named with the phase.
func TestErrorClassesMapToExitCodes(t *testing.T) {
	gr := schema.GroupResource{Resource: "nodes"}
	for _, c := range []struct {
		name      string
		setup     func(*seamNode)
		phase     string
		code      int
		discovers int // 0: not checked
		retried   bool
	}{
		{name: "CA pin mismatch is not retried", phase: "discover", code: exitcode.TLS, discovers: 1, setup: func(n *seamNode) {
			n.cfg.Discover = failDiscover(n, preflight.ClassTLS)
		}},
		{name: "bad token is not retried", phase: "discover", code: exitcode.Token, discovers: 1, setup: func(n *seamNode) {
			n.cfg.Discover = failDiscover(n, preflight.ClassToken)
		}},
		{name: "unreachable is retried, then its code", phase: "discover", code: exitcode.Unreachable, retried: true, setup: func(n *seamNode) {
			n.cfg.Timeout = 200 * time.Millisecond
			n.cfg.Discover = failDiscover(n, preflight.ClassTCP)
		}},
		{name: "DNS is retried, then its code", phase: "discover", code: exitcode.DNS, retried: true, setup: func(n *seamNode) {
			n.cfg.Timeout = 200 * time.Millisecond
			n.cfg.Discover = failDiscover(n, preflight.ClassDNS)
		}},
		{name: "a Ready Node holds the name", phase: "name", code: exitcode.NameTaken, setup: func(n *seamNode) {
			n.cluster.bootstrapNode = fakeNode("node-1", corev1.ConditionTrue)
		}},
		{name: "Node lookup: token refused", phase: "name", code: exitcode.Token, setup: func(n *seamNode) {
			n.cluster.bootstrapErr = apierrors.NewUnauthorized("token expired")
		}},
		{name: "Node lookup: forbidden", phase: "name", code: exitcode.Internal, setup: func(n *seamNode) {
			n.cluster.bootstrapErr = apierrors.NewForbidden(gr, "node-1", errors.New("no RBAC"))
		}},
		{name: "Node lookup: connection refused", phase: "name", code: exitcode.Unreachable, setup: func(n *seamNode) {
			n.cluster.bootstrapErr = fmt.Errorf("dial tcp: %w", syscall.ECONNREFUSED)
		}},
		{name: "Node lookup: apiserver unavailable", phase: "name", code: exitcode.Unreachable, setup: func(n *seamNode) {
			n.cluster.bootstrapErr = apierrors.NewServiceUnavailable("etcd down")
		}},
		{name: "Node lookup: anything else", phase: "name", code: exitcode.Internal, setup: func(n *seamNode) {
			n.cluster.bootstrapErr = apierrors.NewBadRequest("odd")
		}},
		{name: "containerd fails to start", phase: "containerd", code: exitcode.Services, setup: func(n *seamNode) {
			n.svc.fail = map[string]error{layout.ContainerdUnit: errors.New("job failed")}
		}},
		{name: "containerd has no images", phase: "images", code: exitcode.Services, setup: func(n *seamNode) {
			n.cfg.Images = func(context.Context, imagestore.Config) (imagestore.Result, error) {
				return imagestore.Result{}, errors.New("no pause image")
			}
		}},
		{name: "the kubelet never finishes its TLS bootstrap", phase: "tls-bootstrap", code: exitcode.Timeout, setup: func(n *seamNode) {
			n.cfg.Timeout = 300 * time.Millisecond
			n.svc.kubeconfig = filepath.Join(t.TempDir(), "elsewhere") // the kubelet writes no kubeconfig where the agent waits
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newSeamNode(t, "a: b")
			c.setup(n)
			st, err := n.run(t)
			var je *join.Error
			if !errors.As(err, &je) {
				t.Fatalf("err = %v, want a *join.Error", err)
			}
			if je.Code != c.code || je.Phase != c.phase {
				t.Errorf("exit %d in phase %s (%v), want %d in %s", je.Code, je.Phase, err, c.code, c.phase)
			}
			if st.ExitCode != c.code || st.Result != "failed" {
				t.Errorf("status: exit %d, result %s", st.ExitCode, st.Result)
			}
			if c.discovers != 0 && n.discovers != c.discovers {
				t.Errorf("%d discoveries, want %d", n.discovers, c.discovers)
			}
			if c.retried && n.discovers < 2 {
				t.Errorf("%d discoveries, want retries", n.discovers)
			}
			if _, ok := exitcode.Lookup(je.Code); !ok {
				t.Errorf("exit code %d is not documented", je.Code)
			}
		})
	}
}

func failDiscover(n *seamNode, class preflight.Class) func(context.Context, nodeconfig.ControlPlane, bootstraptoken.Token, preflight.Options) (preflight.Result, error) {
	return func(context.Context, nodeconfig.ControlPlane, bootstraptoken.Token, preflight.Options) (preflight.Result, error) {
		n.discovers++
		return preflight.Result{}, &preflight.Error{Class: class, Check: "fake", Err: errors.New("fake failure"), Hint: "none"}
	}
}

// A joined node trusts its control plane through what it has on disk, but not blindly: the CA it joined with must
// still be pinned (checked every run, locally), and an endpoint other than the one in the joined marker is verified
// again (Recheck, retried while unreachable) before the node's files point at it; an old agent's marker, which
// names no endpoint, counts as changed.
func TestJoinedNodeReverifiesAChangedPinOrEndpoint(t *testing.T) {
	n := newSeamNode(t, "a: b")
	var rechecks []string
	fails := 0
	n.cfg.Recheck = func(_ context.Context, cp nodeconfig.ControlPlane, ca []byte, _ preflight.Options) error {
		rechecks = append(rechecks, cp.Endpoint)
		if want, _ := seamCA(); string(ca) != string(want) {
			t.Errorf("Recheck got CA %q, want the one on disk", ca)
		}
		if fails > 0 {
			fails--
			return &preflight.Error{Class: preflight.ClassTCP, Check: "tcp", Err: errors.New("connection refused")}
		}
		return nil
	}
	n.mustJoin(t)
	discover := func(st *join.Status) join.PhaseStatus { return st.Phases[0] }

	if st := n.mustJoin(t); discover(st).Result != "skipped" || len(rechecks) != 0 {
		t.Errorf("unchanged: discover %+v, rechecks %v", discover(st), rechecks)
	}

	n.cfg.NodeConfig.ControlPlane.Endpoint = "https://cp2.invalid:6443"
	fails = 1
	st := n.mustJoin(t)
	if d := discover(st); d.Result != "ok" || !strings.Contains(d.Detail, "re-verified (attempt 2)") || !strings.Contains(d.Detail, "https://cp.invalid:6443") {
		t.Errorf("a new endpoint: discover %+v", d)
	}
	if !slices.Equal(rechecks, []string{"https://cp2.invalid:6443", "https://cp2.invalid:6443"}) {
		t.Errorf("rechecks %v, want the new endpoint twice (one failure, retried)", rechecks)
	}
	if m, err := join.ReadMarker(n.cfg.StateDir); err != nil || m.Endpoint != "https://cp2.invalid:6443" || m.Node != "node-1" {
		t.Errorf("marker after the change: %+v, %v", m, err)
	}
	rechecks = nil
	if st := n.mustJoin(t); discover(st).Result != "skipped" || len(rechecks) != 0 {
		t.Errorf("after the change was verified: discover %+v, rechecks %v", discover(st), rechecks)
	}

	os.WriteFile(filepath.Join(n.cfg.StateDir, join.JoinedFile), []byte("node-1 2026-01-01T00:00:00Z\n"), 0o644)
	if st := n.mustJoin(t); discover(st).Result != "ok" || len(rechecks) != 1 {
		t.Errorf("an old marker: discover %+v, rechecks %v", discover(st), rechecks)
	}

	_, other := newCA("another CA")
	n.cfg.NodeConfig.ControlPlane.Discovery.Pins = []capin.Pin{other}
	st, err := n.run(t)
	var je *join.Error
	if !errors.As(err, &je) || je.Code != exitcode.TLS || je.Phase != "discover" || !strings.Contains(err.Error(), `"seam CA"`) {
		t.Fatalf("the CA on disk no longer pinned: %v (%s)", err, phaseResults(st))
	}
	if len(n.svc.calls) != 0 {
		t.Errorf("a node whose CA is not pinned went on: %v", n.svc.calls)
	}
}

// A run killed inside an atomic write leaves a 0600 temporary file next to the target; the next run removes those
// of every directory it writes into, and nothing else.
func TestRunSweepsKilledWritesTemporaryFiles(t *testing.T) {
	n := newSeamNode(t, "a: b")
	n.mustJoin(t)
	var left []string
	for _, dir := range []string{n.cfg.StateDir, filepath.Dir(n.cfg.Paths.KubeletConfig), n.cfg.Paths.CNIConfDir} {
		f, err := os.CreateTemp(dir, ".some-file.tmp-*")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		left = append(left, f.Name())
	}
	keep := filepath.Join(n.cfg.StateDir, ".keep.tmp-x")
	os.WriteFile(keep, nil, 0o600)
	n.mustJoin(t)
	for _, p := range left {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is left (%v)", p, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file that is not a temporary one was removed: %v", err)
	}
}
