// Package e2e runs berth end to end: a Debian 12 node image baked by the plugin's builder boots under qemu (TCG),
// gets its NodeConfig from a NoCloud seed filled in from cloud-init/'s template, and its berth-agent (enabled in
// the image, run by the guest's systemd) joins the real control plane on this host's loopback.
package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/internal/node/layout"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/agent/join"
	"berth.dev/berth/agent/nodeready"
	cloudinit "berth.dev/berth/cloud-init"
	"berth.dev/berth/imagebuilder/qemu"
	devcp "berth.dev/berth/internal/dev/controlplane"
	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"berth.dev/berth/internal/node/exitcode"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/nodeimage"
	"berth.dev/berth/test/podwait"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/vm"
)

// apiInGuest is where a guest reaches the control plane: qemu forwards it to the apiserver's loopback port.
const apiInGuest = "10.0.2.100:6443"

// The e2e join. The control plane is down when the guest boots and comes up 60 s after the guest started; the
// agent retries and joins without help (meanwhile: what a first boot of the image must show). Then: the Node is Ready, a pod from a pre-cached image runs to
// completion on it, the bootstrap credentials are gone from the guest, the agent unit says it joined, and in the
// guest `berth-agent preflight` refuses a wrong CA pin (12) and an expired token (16: unsigned, retried).
func TestJoinInQemu(t *testing.T) {
	image := nodeimage.QCOW2(t)
	k8s := toolbin.Kubernetes.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	apiPort, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.Config{Dir: t.TempDir(), BinDir: k8s, APIServerPort: apiPort, ExtraSANs: []string{"10.0.2.100"},
		AdvertiseURL: "https://" + apiInGuest, Log: logger}
	var cp *controlplane.ControlPlane
	t.Cleanup(func() {
		if cp == nil {
			return
		}
		if t.Failed() {
			for _, c := range devcp.Components {
				t.Logf("--- %s log (tail):\n%s", c, proc.Tail(cp.LogPath(c), 20))
			}
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	start := func() {
		t.Helper()
		var err error
		if cp, err = devcp.Start(ctx, cfg); err != nil {
			t.Fatalf("start control plane: %v", err)
		}
	}

	// Join material first (the control plane keeps its CA and etcd in cfg.Dir), then an expired token, then down.
	start()
	info, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := bootstraptoken.Generate()
	if err := cp.CreateToken(ctx, expired, time.Now().Add(-time.Minute), "e2e: expired"); err != nil {
		t.Fatal(err)
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	cp = nil

	const name = "e2e-node-1"
	booted := time.Now()
	g := vm.Boot(t, vm.Config{Name: name, Image: image, Format: "qcow2",
		UserData:      cloudinit.UserData(cloudinit.Join{Endpoint: "https://" + apiInGuest, Token: info.Token, CACertPin: info.CACertPin, NodeName: name}),
		GuestForwards: []qemu.GuestForward{{Guest: apiInGuest, HostPort: cfg.APIServerPort}}})
	t.Logf("guest answers SSH %v after start", time.Since(booted).Round(time.Second))
	// While the control plane is down the agent is still starting (Type=notify: READY comes with the join).
	if got := g.Run("systemctl show -p ActiveState -p StatusText berth-agent"); !strings.Contains(got, "ActiveState=activating") {
		t.Errorf("agent with the control plane down: %s, want activating", got)
	}
	// A first boot of the baked image (the bake's own boot check covers systemd, cloud-init, containerd, the
	// versions and the units): a fresh machine-id and fresh SSH host keys, and the kubelet installed but disabled,
	// since the agent starts it.
	if got := strings.TrimSpace(g.Run("cat /etc/machine-id")); len(got) != 32 {
		t.Errorf("machine-id after first boot = %q, want a fresh 32-hex id", got)
	}
	if got := g.Run("ls /etc/ssh/"); !strings.Contains(got, "ssh_host_ed25519_key") {
		t.Errorf("first boot did not generate SSH host keys: %s", got)
	}
	if got := strings.TrimSpace(g.Run("systemctl is-enabled kubelet.service || true")); got != "disabled" {
		t.Errorf("kubelet.service is %q, want installed but disabled (the agent starts it)", got)
	}
	if wait := 60*time.Second - time.Since(booted); wait > 0 {
		time.Sleep(wait)
	}
	start()
	t.Logf("control plane up %v after the guest started", time.Since(booted).Round(time.Second))

	// The Node becomes Ready.
	wctx, cancel := context.WithTimeout(ctx, 8*time.Minute)
	node, err := nodeready.Wait(wctx, cp.Client.CoreV1().Nodes(), name, 2*time.Second)
	cancel()
	if err != nil {
		t.Fatalf("%v; agent:\n%s\nstatus:\n%s", err, tryRun(g, "journalctl -u berth-agent --no-pager | tail -n 40"), tryRun(g, "berth-agent status"))
	}
	t.Logf("node Ready %v after the guest started; kubelet %s, podCIDR %s", time.Since(booted).Round(time.Second),
		node.Status.NodeInfo.KubeletVersion, node.Spec.PodCIDR)
	if node.Labels["node.berth.dev/pool"] != "default" {
		t.Errorf("node labels %v lack the template's node.berth.dev/pool=default", node.Labels)
	}

	// The unit reports the join; the status file and `berth-agent status` agree.
	waitGuest(t, g, "agent active and joined", "systemctl show -p ActiveState -p StatusText berth-agent",
		func(s string) bool {
			return strings.Contains(s, "ActiveState=active") && strings.Contains(s, "StatusText=joined as "+name)
		})
	var st join.Status
	if err := json.Unmarshal([]byte(g.Run("cat /var/lib/berth/status.json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Result != "joined" {
		t.Errorf("status.json result %q", st.Result)
	}
	// The status is the join's own (the agent's token scrub does not trigger a re-apply that would replace it).
	var toKubelet, toReady time.Duration
	seen := map[string]join.PhaseStatus{}
	for _, p := range st.Phases {
		t.Logf("guest phase %-13s %-8s %8v %s", p.Name, p.Result, p.Duration.Round(time.Millisecond), p.Detail)
		seen[p.Name] = p
		switch p.Name {
		case "discover", "name", "files", "sysctls", "containerd", "images", "kubelet":
			toKubelet += p.Duration
		case "tls-bootstrap", "cni", "ready":
			toReady += p.Duration
		}
	}
	if seen["discover"].Result != "ok" || seen["cleanup"].Detail == "nothing to remove" {
		t.Errorf("status.json is not the join's: discover %q, cleanup %q", seen["discover"].Result, seen["cleanup"].Detail)
	}
	t.Logf("guest join: discovery (with the control plane late) %v, then to kubelet started %v, kubelet started → Ready %v",
		seen["discover"].Duration.Round(time.Millisecond), (toKubelet - seen["discover"].Duration).Round(time.Millisecond), toReady.Round(time.Millisecond))
	if d := seen["images"].Detail; !strings.Contains(d, "5 shipped image(s) present, 0 imported") || !strings.Contains(d, "sandbox image pinned") {
		t.Errorf("images phase in the guest: %q, want all 5 (pause, busybox, CoreDNS, the log shipper's, the agent's) pre-cached and the sandbox pinned", d)
	}
	if out := tryRun(g, "ctr -n k8s.io images ls -q"); !strings.Contains(out, layout.LogsImage) || !strings.Contains(out, layout.AgentImage) {
		t.Errorf("the log shipper's image %s or the agent's %s is not in the guest's containerd:\n%s", layout.LogsImage, layout.AgentImage, out)
	}
	if out := tryRun(g, "ctr -n k8s.io images ls name=="+images.Pause); !strings.Contains(out, "io.cri-containerd.pinned=pinned") {
		t.Errorf("the pause image is not pinned in the guest:\n%s", out)
	}
	waitGuest(t, g, "kube-proxy active", "systemctl is-active kube-proxy", func(s string) bool { return strings.TrimSpace(s) == "active" })
	if out, err := g.Try("berth-agent status"); err != nil {
		t.Errorf("berth-agent status: %v\n%s", err, out)
	}

	// The bootstrap credentials are gone: no bootstrap kubeconfig, and the token's secret is nowhere on the node:
	// not in the drop-in (scrubbed), not in cloud-init's copies of the user data (scrubbed), in no other file, on
	// no command line, in no environment, not in the journal.
	if out, err := g.Try("test ! -e /var/lib/kubelet/bootstrap-kubeconfig"); err != nil {
		t.Errorf("bootstrap kubeconfig left: %v %s", err, out)
	}
	noSecretLeft(t, g, info.Token.Secret())
	if out := tryRun(g, "grep -c 'token: "+info.Token.ID()+"."+bootstraptoken.ScrubbedSecret+"' /var/lib/cloud/instance/user-data.txt"); strings.TrimSpace(out) != "1" {
		t.Errorf("cloud-init's copy of the user data does not hold the scrubbed token: %q", out)
	}

	// A pod from a pre-cached image (no registry) runs on the node.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "default"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, NodeName: name,
			Containers: []corev1.Container{{Name: "hello", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "test -s /etc/hostname && echo hello from berth"}}}}}
	if _, err := cp.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, 4*time.Minute)
	p, err := podwait.Phase(pctx, cp.Client.CoreV1().Pods("default"), "hello", corev1.PodSucceeded, 2*time.Second)
	pcancel()
	if err != nil {
		t.Fatalf("%v\nkubelet:\n%s", err, tryRun(g, "journalctl -u kubelet --no-pager | tail -n 30"))
	}
	t.Logf("pod succeeded on %s with IP %s", p.Spec.NodeName, p.Status.PodIP)

	// Preflight in the guest, against the real apiserver: a wrong pin, then an expired token.
	wrongPin := capin.Pin("sha256:" + strings.Repeat("0", 64))
	for _, c := range []struct {
		what string
		tok  bootstraptoken.Token
		pin  capin.Pin
		code int
	}{{"wrong CA pin", info.Token, wrongPin, exitcode.TLS}, {"expired token", expired, info.CACertPin, exitcode.Timeout}} { // unsigned: retried
		cfgFile := fmt.Sprintf("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  controlPlane:\n    endpoint: https://%s\n    discovery:\n      tokenFile: /root/token\n      caCertHashes: [%q]\n", apiInGuest, string(c.pin))
		out, err := g.Try(fmt.Sprintf("umask 077; printf %%s %s > /root/token; echo %s | base64 -d > /root/bad.yaml; berth-agent preflight -f /root/bad.yaml 2>&1; echo exit=$?",
			c.tok.Value(), base64.StdEncoding.EncodeToString([]byte(cfgFile))))
		if err != nil || !strings.Contains(out, fmt.Sprintf("exit=%d", c.code)) {
			t.Errorf("%s: preflight in the guest: %v\n%s (want exit %d)", c.what, err, out, c.code)
		}
	}
	g.Stop() // one TCG guest at a time

	durations := map[string]time.Duration{}
	for _, p := range st.Phases {
		durations[p.Name] = p.Duration
	}
	t.Run("sigkill-in-every-phase", func(t *testing.T) { killEveryPhase(t, ctx, image, cp, info, cfg.APIServerPort, durations) })
}

// phases are the agent's join phases, in order.
var phases = []string{"discover", "name", "files", "sysctls", "containerd", "images", "kubelet", "tls-bootstrap", "cni", "ready", "kube-proxy", "cleanup"}

// killEveryPhase joins a second guest whose agent SIGKILLs itself twice in each phase (the agent's test failpoint,
// BERTH_AGENT_TEST_KILL_PLAN): once as the phase starts, and once after a random delay of up to the phase's
// duration in the first guest (so most land inside the phase, mid-write or mid-wait). systemd restarts it after
// each kill. The join must converge: one Ready Node, the bootstrap credentials gone, every planned kill done and
// one restart per kill. The guest boots without a NodeConfig; the agent waits for one and picks it up from its
// drop-in directory when the test writes it.
func killEveryPhase(t *testing.T, ctx context.Context, image string, cp *controlplane.ControlPlane, info controlplane.JoinInfo, port int, durations map[string]time.Duration) {
	const name = "e2e-node-2"
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	var plan strings.Builder
	for _, p := range phases {
		limit := min(max(durations[p], 5*time.Millisecond), 2*time.Second)
		fmt.Fprintf(&plan, "%s 0s\n%s %v\n", p, p, time.Duration(1+rng.Int64N(int64(limit))).Round(time.Microsecond))
	}
	t.Logf("kill plan (seed %d):\n%s", seed, plan.String())

	g := vm.Boot(t, vm.Config{Name: name, Image: image, Format: "qcow2",
		GuestForwards: []qemu.GuestForward{{Guest: apiInGuest, HostPort: port}}})
	waitGuest(t, g, "agent waiting for a NodeConfig", "systemctl show -p ActiveState -p StatusText berth-agent",
		func(s string) bool { return strings.Contains(s, "StatusText=waiting for a NodeConfig") })
	// The failpoint, and a quick restart without a start limit (24 kills in a row).
	const killDir = "/var/lib/berth-test/kills"
	g.Write(killDir+"/plan", []byte(plan.String()), 0o600)
	g.Write("/etc/systemd/system/berth-agent.service.d/50-e2e.conf",
		[]byte("[Unit]\nStartLimitIntervalSec=0\n[Service]\nRestartSec=1\nEnvironment=BERTH_AGENT_TEST_KILL_PLAN="+killDir+"\n"), 0o644)
	g.Run("systemctl daemon-reload && systemctl restart berth-agent")
	g.Write("/etc/berth/config.d/10-user-data.yaml", []byte(nodeConfig(t, "https://"+apiInGuest, info, name)), 0o600)

	want := 2 * len(phases)
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(3 * time.Second) {
		n, err := cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		killed, _ := g.Try("ls " + killDir + " | grep -c killed-")
		if err == nil && nodeready.Ready(n) && strings.TrimSpace(killed) == strconv.Itoa(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not Ready with %d kills done (err %v; %s done); agent:\n%s", name, want, err, strings.TrimSpace(killed),
				tryRun(g, "journalctl -u berth-agent --no-pager | tail -n 40"))
		}
	}
	waitGuest(t, g, "agent joined after the kills", "systemctl show -p ActiveState -p StatusText berth-agent",
		func(s string) bool { return strings.Contains(s, "StatusText=joined as "+name) })
	records := strings.Split(strings.TrimSpace(g.Run("cat "+killDir+"/killed-*")), "\n")
	restarts := strings.TrimSpace(g.Run("systemctl show -p NRestarts --value berth-agent"))
	inside := 0
	for _, r := range records {
		f := map[string]string{}
		for _, kv := range strings.Fields(r) {
			k, v, _ := strings.Cut(kv, "=")
			f[k] = v
		}
		switch {
		case f["after"] == "0s" && f["landed"] != f["target"]:
			t.Errorf("a phase-start kill landed elsewhere: %s", r)
		case f["after"] != "0s" && f["landed"] == f["target"]:
			inside++
		}
		t.Logf("kill %s", r)
	}
	t.Logf("%d kills (%d at phase starts, %d of %d delayed ones inside their phase), %s restarts by systemd",
		len(records), len(phases), inside, len(phases), restarts)
	if len(records) != want {
		t.Errorf("%d kill records, want %d", len(records), want)
	}
	if restarts != strconv.Itoa(len(records)) {
		t.Errorf("NRestarts = %s, want one per kill (%d)", restarts, len(records))
	}
	if out, err := g.Try("test ! -e /var/lib/kubelet/bootstrap-kubeconfig"); err != nil {
		t.Errorf("the bootstrap kubeconfig is left after the kills: %v %s", err, out)
	}
	noSecretLeft(t, g, info.Token.Secret())
	if out := tryRun(g, "find /etc/kubernetes /etc/containerd /etc/systemd/system /etc/cni /etc/sysctl.d /etc/berth /var/lib/kubelet /var/lib/kube-proxy /var/lib/berth /var/lib/cloud -name '.*.tmp-[0-9]*' 2>/dev/null"); strings.TrimSpace(out) != "" {
		t.Errorf("temporary files of killed writes are left:\n%s", out)
	}
	nodes, err := cp.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		names = append(names, n.Name)
	}
	if slices.Sort(names); !slices.Equal(names, []string{"e2e-node-1", name}) {
		t.Errorf("nodes %v, want e2e-node-1 and one %s", names, name)
	}
}

// nodeConfig is the NodeConfig drop-in that cloud-init/'s template, filled in, makes cloud-init write.
func nodeConfig(t testing.TB, endpoint string, info controlplane.JoinInfo, name string) string {
	t.Helper()
	nc, err := cloudinit.NodeConfig(cloudinit.Join{Endpoint: endpoint, Token: info.Token, CACertPin: info.CACertPin, NodeName: name})
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// noSecretLeft fails t if the guest holds secret anywhere: in a file on the root filesystem or in /run (the seed
// is the cloud's ISO, not the node's disk), on a command line, in an environment, or in this boot's journal. The
// secret reaches the guest in two halves, so the search puts it on no command line before /proc is read.
func noSecretLeft(t testing.TB, g *vm.Guest, secret string) {
	t.Helper()
	h := len(secret) / 2
	out, err := g.Try(fmt.Sprintf(`s=$(printf %%s%%s %s %s)
grep -lFf <(echo "$s") /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null
find / /run -xdev -type f -size -64M -print0 2>/dev/null | xargs -0 grep -lF -e "$s" --
echo "journal: $(journalctl -b --no-pager | grep -cF -e "$s")"`, secret[:h], secret[h:]))
	if strings.TrimSpace(out) != "journal: 0" {
		t.Errorf("the token's secret is still on the node (%v):\n%s", err, out)
	}
}

func tryRun(g *vm.Guest, cmd string) string {
	out, err := g.Try(cmd)
	if err != nil {
		return fmt.Sprintf("%s(%v)", out, err)
	}
	return out
}

func waitGuest(t testing.TB, g *vm.Guest, what, cmd string, ok func(string) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := g.SSH().Wait(ctx, cmd, 2*time.Second, ok); err != nil {
		t.Errorf("%s: %v", what, err)
	}
}
