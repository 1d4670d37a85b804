// Package join turns a validated NodeConfig into a Ready node, as phases over explicit state: discover the control
// plane (kubeadm's way, with retries while it is unreachable), refuse a name a Ready node holds, render and write
// the node's files (only those that changed), start containerd and the kubelet (restarting only what a change
// affects), wait for the kubelet's TLS bootstrap, write the CNI config from the Node's podCIDR, wait for Ready,
// start kube-proxy, and remove the bootstrap credentials. Every phase is safe to re-run; a status file records
// each phase with its duration, and the joined marker is written only on success.
//
// The daemons are run by a Services implementation: systemd over D-Bus on a node, processes in the host tier.
package join

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"berth.dev/berth/agent/imagestore"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/agent/preflight"
	"berth.dev/berth/agent/render"
	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/exitcode"
	"berth.dev/berth/internal/node/layout"
)

// Services runs the node's daemons by unit name.
type Services interface {
	// Reload makes the manager read changed unit files and drop-ins (systemd: daemon-reload).
	Reload(ctx context.Context) error
	// Start starts the unit unless it runs; Restart restarts it (or starts it). Both return when the job is done.
	Start(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
}

// Config is one run's input.
type Config struct {
	// NodeConfig is the node's configuration, defaults applied (its node name among them).
	NodeConfig *nodeconfig.Config
	Profile    distro.Profile
	Paths      layout.Paths
	// StateDir holds the status file, the joined marker and the pending restarts (/var/lib/berth).
	StateDir string
	// DropInDir is scrubbed of inline tokens after the join (/etc/berth/config.d).
	DropInDir string
	Services  Services
	Preflight preflight.Options
	// Discover checks the control plane and returns its CA (default preflight.Run); NewClient makes a Kubernetes
	// client (default kubernetes.NewForConfig); Images makes sure containerd has the shipped images and pins the
	// sandbox image (default imagestore.Ensure). With Services they are the join's seams to the outside world.
	Discover func(context.Context, nodeconfig.ControlPlane, bootstraptoken.Token, preflight.Options) (preflight.Result, error)
	// Recheck verifies a joined node's control plane from the CA on its disk when the endpoint changed (default
	// preflight.Recheck).
	Recheck   func(context.Context, nodeconfig.ControlPlane, []byte, preflight.Options) error
	NewClient func(*rest.Config) (kubernetes.Interface, error)
	Images    func(context.Context, imagestore.Config) (imagestore.Result, error)
	// Timeout bounds the whole run (default 15 minutes): discovery retries until then, then the waits.
	Timeout time.Duration
	// Backoff is the first and the longest wait between discovery attempts (default 1 s and 30 s).
	BackoffInitial, BackoffMax time.Duration
	// Notify is sd_notify (nil: not under systemd).
	Notify func(state string) error
	// BeforePhase, if set, is called as each phase starts (the e2e tests kill the agent there).
	BeforePhase func(phase string)
	Log         *slog.Logger
}

// Error is a failed run: the phase, the exit code and what to do.
type Error struct {
	Phase string
	Code  int
	Err   error
	Hint  string
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return fmt.Sprintf("%s: %v", e.Phase, e.Err)
	}
	return fmt.Sprintf("%s: %v; %s", e.Phase, e.Err, e.Hint)
}
func (e *Error) Unwrap() error { return e.Err }

// state is what the phases share.
type state struct {
	cfg      Config
	log      *slog.Logger
	name     string
	joined   bool // a kubelet kubeconfig from an earlier join exists
	token    bootstraptoken.Token
	ca       []byte
	input    render.Input
	pending  map[string]bool // units to restart: persisted so a killed run still restarts them
	client   kubernetes.Interface
	deadline time.Time
}

type phase struct {
	name string
	run  func(context.Context, *state) (detail string, err error)
}

var phases = []phase{
	{"discover", discover},
	{"name", checkName},
	{"files", writeFiles},
	{"sysctls", applySysctls},
	{"containerd", startUnit(layout.ContainerdUnit)},
	{"images", ensureImages},
	{"kubelet", startUnit(layout.KubeletUnit)},
	{"tls-bootstrap", waitTLSBootstrap},
	{"cni", writeCNI},
	{"ready", waitReady},
	{"kube-proxy", startUnit(layout.KubeProxyUnit)},
	{"cleanup", cleanup},
}

// Run joins the node (or re-applies the configuration of a joined one) and returns the run's status.
func Run(ctx context.Context, cfg Config) (*Status, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Minute
	}
	if cfg.BackoffInitial == 0 {
		cfg.BackoffInitial = time.Second
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.Discover == nil {
		cfg.Discover = preflight.Run
	}
	if cfg.Recheck == nil {
		cfg.Recheck = preflight.Recheck
	}
	if cfg.NewClient == nil {
		cfg.NewClient = func(c *rest.Config) (kubernetes.Interface, error) { return kubernetes.NewForConfig(c) }
	}
	if cfg.Images == nil {
		cfg.Images = imagestore.Ensure
	}
	s := &state{cfg: cfg, log: cfg.Log, deadline: time.Now().Add(cfg.Timeout)}
	s.name = cfg.NodeConfig.Node.Name
	st := &Status{Node: s.name, Started: time.Now().UTC(), Result: "running"}
	ctx, cancel := context.WithDeadline(ctx, s.deadline)
	defer cancel()
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return st, &Error{Phase: "state", Code: exitcode.Internal, Err: err}
	}
	s.sweep(cfg.StateDir, cfg.DropInDir)
	var err error
	if s.pending, err = readPending(cfg.StateDir); err != nil {
		return st, &Error{Phase: "state", Code: exitcode.Internal, Err: err}
	}
	if s.name == "" {
		return st, &Error{Phase: "state", Code: exitcode.Internal, Err: errors.New("no node name: spec.node.name is empty and the hostname is unknown")}
	}
	for _, p := range phases {
		ps := PhaseStatus{Name: p.name, Started: time.Now().UTC(), Result: "running"}
		st.Phases = append(st.Phases, ps)
		_ = writeStatus(cfg.StateDir, st)
		s.log.Info("phase started", "phase", p.name)
		if cfg.BeforePhase != nil {
			cfg.BeforePhase(p.name)
		}
		start := time.Now()
		detail, perr := p.run(ctx, s)
		cur := &st.Phases[len(st.Phases)-1]
		cur.Duration, cur.Detail = time.Since(start), detail
		if perr != nil {
			cur.Result = "failed"
			var e *Error
			if !errors.As(perr, &e) {
				e = &Error{Phase: p.name, Code: exitcode.Internal, Err: perr}
			}
			if e.Phase == "" {
				e.Phase = p.name
			}
			st.Result, st.Error, st.ExitCode = "failed", e.Error(), e.Code
			now := time.Now().UTC()
			st.Finished = &now
			_ = writeStatus(cfg.StateDir, st)
			s.log.Error("phase failed", "phase", p.name, "duration", cur.Duration.Round(time.Millisecond), "err", e.Error(), "exit", e.Code)
			return st, e
		}
		cur.Result = "ok"
		if strings.HasPrefix(detail, "skipped") {
			cur.Result = "skipped"
		}
		s.log.Info("phase done", "phase", p.name, "duration", cur.Duration.Round(time.Millisecond), "detail", detail)
	}
	now := time.Now().UTC()
	st.Finished, st.Result = &now, "joined"
	if err := writeStatus(cfg.StateDir, st); err != nil {
		return st, &Error{Phase: "state", Code: exitcode.Internal, Err: err}
	}
	if err := writeMarker(cfg.StateDir, Marker{Node: s.name, Endpoint: cfg.NodeConfig.ControlPlane.Endpoint, Joined: now}); err != nil {
		return st, &Error{Phase: "state", Code: exitcode.Internal, Err: err}
	}
	if cfg.Notify != nil {
		if err := cfg.Notify("READY=1\nSTATUS=joined as " + s.name); err != nil {
			s.log.Warn("sd_notify", "err", err)
		}
	}
	return st, nil
}

// discover trusts the control plane: from an earlier join (the CA on disk and the kubelet's kubeconfig), or
// through preflight (DNS, TCP, TLS + pins, token, clock), retried with backoff while the failure may pass.
func discover(ctx context.Context, s *state) (string, error) {
	if kc, err := clientcmd.LoadFromFile(s.cfg.Paths.Kubeconfig); err == nil && len(kc.AuthInfos) > 0 {
		if ca, err := os.ReadFile(s.cfg.Paths.CACert); err == nil {
			s.joined, s.ca = true, ca
			s.setInput()
			return recheck(ctx, s)
		}
	}
	tok, err := preflight.Token(s.cfg.NodeConfig.ControlPlane.Discovery)
	if err != nil {
		return "", &Error{Code: int(preflight.ClassToken), Err: err, Hint: "put a bootstrap token in spec.controlPlane.discovery"}
	}
	s.token = tok
	var res preflight.Result
	attempts, err := s.retry(ctx, func() (err error) {
		res, err = s.cfg.Discover(ctx, s.cfg.NodeConfig.ControlPlane, tok, s.cfg.Preflight)
		return err
	})
	if err != nil {
		return "", err
	}
	s.ca = res.CA
	s.setInput()
	return fmt.Sprintf("%s passed (attempt %d)", strings.Join(res.Passed, ", "), attempts), nil
}

// recheck verifies a joined node's trust in its control plane from what it has on disk (the token is gone): the
// CA it joined with must still be pinned by the NodeConfig (a local check, every run), and an endpoint other than
// the one it joined through (the joined marker's) must serve a certificate signed by that CA (preflight.Recheck,
// retried like discovery). A node whose control plane is down at boot is not held up: an unchanged endpoint needs
// no network.
func recheck(ctx context.Context, s *state) (string, error) {
	cp := s.cfg.NodeConfig.ControlPlane
	if err := preflight.Pinned(s.ca, cp.Discovery); err != nil {
		return "", &Error{Code: int(preflight.ClassTLS), Err: err, Hint: preflight.PinHint}
	}
	m, err := ReadMarker(s.cfg.StateDir)
	if err == nil && m.Endpoint == cp.Endpoint {
		return "skipped: joined earlier through this endpoint; the CA on disk is still pinned", nil
	}
	was := "unknown: " + fmt.Sprint(err)
	if err == nil {
		was = m.Endpoint
	}
	attempts, err := s.retry(ctx, func() error { return s.cfg.Recheck(ctx, cp, s.ca, s.cfg.Preflight) })
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("re-verified (attempt %d): %s serves a certificate signed by the CA this node joined with, which is still pinned (joined through %s)",
		attempts, cp.Endpoint, was), nil
}

// retry runs check until it passes, retrying with backoff the failures that may pass (DNS, TCP, clock, a token
// not signed yet) until the run's deadline, and returns how many attempts it took.
func (s *state) retry(ctx context.Context, check func() error) (int, error) {
	wait := s.cfg.BackoffInitial
	for attempt := 1; ; attempt++ {
		err := check()
		if err == nil {
			return attempt, nil
		}
		var pe *preflight.Error
		if !errors.As(err, &pe) {
			return 0, err
		}
		retry := pe.Class == preflight.ClassDNS || pe.Class == preflight.ClassTCP || pe.Class == preflight.ClassClock ||
			pe.Class == preflight.ClassPending
		if !retry {
			return 0, &Error{Code: int(pe.Class), Err: pe}
		}
		if time.Now().Add(wait).After(s.deadline) {
			return 0, &Error{Code: int(pe.Class), Err: fmt.Errorf("gave up after %d attempts: %w", attempt, pe)}
		}
		s.log.Warn("control plane not reachable yet; retrying", "attempt", attempt, "in", wait, "check", pe.Check, "err", pe.Err)
		select {
		case <-ctx.Done():
			return 0, &Error{Code: int(pe.Class), Err: fmt.Errorf("gave up after %d attempts: %w", attempt, pe)}
		case <-time.After(wait):
		}
		wait = min(2*wait, s.cfg.BackoffMax)
	}
}

func (s *state) setInput() {
	s.input = render.Input{Config: *s.cfg.NodeConfig, Profile: s.cfg.Profile,
		Endpoint: s.cfg.NodeConfig.ControlPlane.Endpoint, CA: s.ca, Token: s.token, Paths: s.cfg.Paths}
}

// checkName refuses to join as a name a Ready node holds (kubeadm does the same): two kubelets would fight over
// one Node. A NotReady holder is a reimaged node coming back and is taken over.
func checkName(ctx context.Context, s *state) (string, error) {
	if s.joined {
		return "skipped: joined earlier as this node", nil
	}
	cs, err := s.cfg.NewClient(&rest.Config{Host: s.input.Endpoint, BearerToken: s.token.Value(),
		TLSClientConfig: rest.TLSClientConfig{CAData: s.ca}, Timeout: 10 * time.Second})
	if err != nil {
		return "", err
	}
	n, err := cs.CoreV1().Nodes().Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "no Node named " + s.name, nil
	case err != nil:
		code, hint := lookupCode(err)
		return "", &Error{Code: code, Err: fmt.Errorf("get Node %s with the bootstrap token: %w", s.name, err), Hint: hint}
	case nodeready.Ready(n):
		return "", &Error{Code: exitcode.NameTaken, Err: fmt.Errorf("a Ready Node named %s already exists", s.name),
			Hint: "give this node another spec.node.name, or remove the other one (kubectl delete node " + s.name + ") if it is gone"}
	}
	return "Node " + s.name + " exists but is not Ready: taking it over", nil
}

// lookupCode classifies a failed Node lookup with the bootstrap token: a refused token, a token without the
// right to get Nodes, a control plane that stopped answering (retried by the unit), or anything else.
func lookupCode(err error) (int, string) {
	var nerr net.Error
	switch {
	case apierrors.IsUnauthorized(err):
		return exitcode.Token, "the control plane refused the bootstrap token (expired or deleted since discovery): create a new one"
	case apierrors.IsForbidden(err):
		return exitcode.Internal, "the bootstrap token may not get Nodes: bind system:bootstrappers:kubeadm:default-node-token to get on nodes (kubeadm:get-nodes)"
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err), errors.As(err, &nerr),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return exitcode.Unreachable, "the control plane stopped answering after discovery; the join is retried"
	}
	return exitcode.Internal, ""
}

// writeFiles writes what changed, after recording which units the changes affect (so a run killed between the
// write and the restart still restarts them next time).
func writeFiles(ctx context.Context, s *state) (string, error) {
	out, err := render.Node(s.input)
	if err != nil {
		return "", &Error{Code: exitcode.InvalidConfig, Err: err}
	}
	dirs := []string{s.cfg.Paths.CNIConfDir}
	for _, f := range out.Files {
		dirs = append(dirs, filepath.Dir(f.Path))
	}
	s.sweep(dirs...)
	var changed []render.File
	for _, f := range out.Files {
		if !sameFile(f) {
			changed = append(changed, f)
		}
	}
	if len(changed) == 0 {
		return "unchanged", nil
	}
	for _, f := range changed {
		for _, u := range f.Units {
			s.pending[u] = true
		}
		if f.Path == s.cfg.Paths.KubeletDropIn || f.Path == s.cfg.Paths.KubeProxyDropIn {
			s.pending["daemon-reload"] = true
		}
	}
	if err := writePending(s.cfg.StateDir, s.pending); err != nil {
		return "", err
	}
	var names []string
	for _, f := range changed {
		if err := atomicfile.Write(f.Path, f.Data, f.Mode); err != nil {
			return "", err
		}
		names = append(names, f.Path)
	}
	s.log.Info("files written", "files", names)
	return fmt.Sprintf("%d of %d files changed", len(changed), len(out.Files)), nil
}

// sweep removes the temporary files that writes into dirs left when an earlier run was killed (atomicfile.Sweep):
// a kill between a temporary file's creation and its rename leaves a 0600 copy, of a credential maybe. Only one
// run writes at a time, so none of them is in use. It is best effort: a directory it cannot sweep is a warning.
func (s *state) sweep(dirs ...string) {
	slices.Sort(dirs)
	for _, dir := range slices.Compact(dirs) {
		if dir == "" {
			continue
		}
		removed, err := atomicfile.Sweep(dir)
		if len(removed) > 0 {
			s.log.Info("removed temporary files a killed run left", "files", removed)
		}
		if err != nil {
			s.log.Warn("could not sweep temporary files", "err", err)
		}
	}
}

func sameFile(f render.File) bool {
	fi, err := os.Stat(f.Path)
	if err != nil || fi.Mode().Perm() != f.Mode.Perm() {
		return false
	}
	data, err := os.ReadFile(f.Path)
	return err == nil && bytes.Equal(data, f.Data)
}

// applySysctls sets spec.sysctls now (the file in /etc/sysctl.d keeps them across reboots).
func applySysctls(ctx context.Context, s *state) (string, error) {
	sysctls := s.cfg.NodeConfig.Sysctls
	if len(sysctls) == 0 {
		return "skipped: none configured", nil
	}
	keys := slices.Sorted(maps.Keys(sysctls))
	for _, k := range keys {
		p := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(p, []byte(sysctls[k]), 0o644); err != nil {
			return "", &Error{Code: exitcode.InvalidConfig, Err: fmt.Errorf("spec.sysctls[%s]: %w", k, err)}
		}
	}
	return fmt.Sprintf("%d set", len(keys)), nil
}

// startUnit starts a unit, or restarts it if a file it reads changed (now or in a run that did not finish).
func startUnit(unit string) func(context.Context, *state) (string, error) {
	return func(ctx context.Context, s *state) (string, error) {
		if s.pending["daemon-reload"] {
			if err := s.cfg.Services.Reload(ctx); err != nil {
				return "", &Error{Code: exitcode.Services, Err: fmt.Errorf("daemon-reload: %w", err)}
			}
			delete(s.pending, "daemon-reload")
			if err := writePending(s.cfg.StateDir, s.pending); err != nil {
				return "", err
			}
		}
		var err error
		detail := "started (or already running)"
		if s.pending[unit] {
			err, detail = s.cfg.Services.Restart(ctx, unit), "(re)started: its configuration changed"
		} else {
			err = s.cfg.Services.Start(ctx, unit)
		}
		if err != nil {
			return "", &Error{Code: exitcode.Services, Err: fmt.Errorf("%s: %w", unit, err), Hint: "see journalctl -u " + unit}
		}
		delete(s.pending, unit)
		return detail, writePending(s.cfg.StateDir, s.pending)
	}
}

// ensureImages checks containerd answers through its client, imports shipped images it lacks and pins the
// sandbox image.
func ensureImages(ctx context.Context, s *state) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res, err := s.cfg.Images(cctx, imagestore.Config{Socket: s.cfg.Paths.ContainerdSocket, ImageDir: s.cfg.Paths.ShippedImages,
		SandboxImage: s.cfg.NodeConfig.Containerd.SandboxImage, Log: s.log})
	if err != nil {
		return "", &Error{Code: exitcode.Services, Err: err, Hint: "see journalctl -u " + layout.ContainerdUnit}
	}
	return res.String(), nil
}

// waitTLSBootstrap waits for the kubelet's kubeconfig (written once its CSR is approved and the certificate
// issued), then uses those credentials from here on.
func waitTLSBootstrap(ctx context.Context, s *state) (string, error) {
	var last error
	for {
		cfg, err := clientcmd.BuildConfigFromFlags("", s.cfg.Paths.Kubeconfig)
		if err == nil {
			cfg.Timeout = 10 * time.Second // every call of this client is a single request (Get, Patch), never a watch
			cs, cerr := s.cfg.NewClient(cfg)
			if cerr == nil {
				if _, err = cs.CoreV1().Nodes().Get(ctx, s.name, metav1.GetOptions{}); err == nil || apierrors.IsNotFound(err) {
					s.client = cs
					return "kubelet credentials at " + s.cfg.Paths.Kubeconfig, nil
				}
			}
			err = errors.Join(err, cerr)
		}
		last = err
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return "", &Error{Code: exitcode.Timeout, Err: fmt.Errorf("the kubelet did not finish its TLS bootstrap: %v", last),
				Hint: "see journalctl -u kubelet; the control plane must approve the node's CSR (kubeadm:node-autoapprove-bootstrap)"}
		}
	}
}

// writeCNI waits for the controller manager to give the Node a podCIDR and writes the bridge config for it.
func writeCNI(ctx context.Context, s *state) (string, error) {
	if s.cfg.NodeConfig.CNI.Mode == nodeconfig.CNINone {
		return "skipped: cni.mode none (a CNI DaemonSet brings its own)", nil
	}
	for {
		n, err := s.client.CoreV1().Nodes().Get(ctx, s.name, metav1.GetOptions{})
		if err == nil && n.Spec.PodCIDR != "" {
			cidr, err := netip.ParsePrefix(n.Spec.PodCIDR)
			if err != nil {
				return "", fmt.Errorf("Node %s podCIDR %q: %w", s.name, n.Spec.PodCIDR, err)
			}
			f, err := render.CNI(s.input, cidr)
			if err != nil {
				return "", err
			}
			if sameFile(*f) {
				return "podCIDR " + cidr.String() + ", unchanged", nil
			}
			if err := atomicfile.Write(f.Path, f.Data, f.Mode); err != nil {
				return "", err
			}
			return "podCIDR " + cidr.String(), nil
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return "", &Error{Code: exitcode.Timeout, Err: fmt.Errorf("Node %s has no podCIDR", s.name),
				Hint: "the controller manager must run with --allocate-node-cidrs and a --cluster-cidr (or set cni.mode: none)"}
		}
	}
}

// waitReady waits for the Node's Ready condition, logging why it is not Ready every 10 seconds.
func waitReady(ctx context.Context, s *state) (string, error) {
	lastLog := time.Now()
	reason := "the Node does not exist yet"
	for {
		n, err := s.client.CoreV1().Nodes().Get(ctx, s.name, metav1.GetOptions{})
		if err == nil {
			if nodeready.Ready(n) {
				return "Ready", nil
			}
			reason = notReadyReason(n)
		}
		if time.Since(lastLog) > 10*time.Second {
			s.log.Info("waiting for the Node to be Ready", "node", s.name, "reason", reason)
			lastLog = time.Now()
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return "", &Error{Code: exitcode.Timeout, Err: fmt.Errorf("Node %s is not Ready: %s", s.name, reason), Hint: "see journalctl -u kubelet -u containerd"}
		}
	}
}

// cleanup removes the bootstrap credentials: the bootstrap kubeconfig, the token file, inline tokens in the
// drop-ins, and the token's secret in the provisioning agents' copies of the user data (scrubCopies). The kubelet renews its own certificate from now on. It is best effort: the node has joined, so a file
// that cannot be removed or a drop-in that cannot be parsed is a warning (logged and named in the phase's detail),
// never a failure that would have systemd restart a Ready node's agent forever.
func cleanup(ctx context.Context, s *state) (string, error) {
	var removed, failed []string
	warn := func(what string, err error) {
		s.log.Warn("could not remove a bootstrap credential", "file", what, "err", err)
		failed = append(failed, fmt.Sprintf("%s (%v)", what, err))
	}
	remove := func(p string) {
		if err := os.Remove(p); err == nil {
			removed = append(removed, p)
		} else if !os.IsNotExist(err) {
			warn(p, err)
		}
	}
	// The secret first, while the token file still holds it: a run that joined earlier (killed before this phase)
	// skipped discovery and has no token of its own.
	tok := s.token
	if tok.IsZero() {
		tok, _ = preflight.Token(s.cfg.NodeConfig.ControlPlane.Discovery)
	}
	copies, problems := scrubCopies(s.cfg.Paths.UserDataCopies, tok.Secret())
	removed = append(removed, copies...)
	for _, p := range problems {
		warn(p.path, p.err)
	}
	remove(s.cfg.Paths.BootstrapKubeconfig)
	if tf := s.cfg.NodeConfig.ControlPlane.Discovery.TokenFile; tf != "" {
		remove(tf)
	}
	if s.cfg.DropInDir != "" {
		scrubbed, problems := scrubTokens(s.cfg.DropInDir)
		removed = append(removed, scrubbed...)
		for _, p := range problems {
			warn(p.path, p.err)
		}
	}
	var detail []string
	if len(removed) > 0 {
		s.log.Info("bootstrap credentials removed", "files", removed)
		detail = append(detail, "removed the token from "+strings.Join(removed, ", "))
	}
	if len(failed) > 0 {
		detail = append(detail, "could not remove it from "+strings.Join(failed, ", "))
	}
	if len(detail) == 0 {
		return "nothing to remove", nil
	}
	return strings.Join(detail, "; "), nil
}

func notReadyReason(n *corev1.Node) string {
	if c := nodeready.Condition(n); c != nil {
		return c.Reason + ": " + c.Message
	}
	return "no Ready condition yet"
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

const pendingFile = "pending-restarts.json"

func readPending(dir string) (map[string]bool, error) {
	m := map[string]bool{}
	data, err := os.ReadFile(filepath.Join(dir, pendingFile))
	if os.IsNotExist(err) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	var units []string
	if err := json.Unmarshal(data, &units); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, pendingFile), err)
	}
	for _, u := range units {
		m[u] = true
	}
	return m, nil
}

func writePending(dir string, m map[string]bool) error {
	units := make([]string, 0, len(m))
	for u := range m {
		units = append(units, u)
	}
	sort.Strings(units)
	data, _ := json.Marshal(units)
	return atomicfile.Write(filepath.Join(dir, pendingFile), data, 0o644)
}
