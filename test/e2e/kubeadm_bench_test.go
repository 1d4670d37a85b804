package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/join"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/nodeready"
	"berth.dev/berth/agent/render"
	"berth.dev/berth/imagebuilder/qemu"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/nodeimage"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/vm"
)

// kubeadmDropIn is the kubelet drop-in kubeadm's packages install (10-kubeadm.conf), pointed at the image's kubelet.
const kubeadmDropIn = `[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/local/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`

// joinTimes are one join's milestones, on the guest's monotonic clock (Node Ready is seen on the host and mapped
// onto it).
type joinTimes struct {
	start, kubelet, ready time.Duration
	// containerd is the berth agent's containerd phase (config written, containerd restarted and answering);
	// kubeadm leaves the runtime to the operator, so the kubeadm guest has it running before the clock starts.
	containerd time.Duration
}

func (j joinTimes) toKubelet() time.Duration { return j.kubelet - j.start }
func (j joinTimes) toReady() time.Duration   { return j.ready - j.kubelet }

// BenchmarkJoinBerthVsKubeadm joins one node with berth-agent and one with `kubeadm join` (built by `make tools`),
// each in a fresh TCG guest booted from the same baked image, to the same control plane, one guest at a time.
// Both get the same kubelet configuration (berth renders it; kubeadm reads it from the kubelet-config ConfigMap)
// and the same containerd config and CNI. It reports, per tool, start → kubelet started and kubelet started →
// Node Ready. Start is the agent's or kubeadm's process start (systemd's ExecMainStartTimestamp); kubelet started
// is the kubelet unit's; Node Ready is watched from the host. Run with -benchtime 1x: every iteration boots two
// guests (about 4 minutes).
func BenchmarkJoinBerthVsKubeadm(b *testing.B) {
	image := nodeimage.QCOW2(b)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(b, controlplane.Config{ExtraSANs: []string{"10.0.2.100"}, AdvertiseURL: "https://" + apiInGuest})
	info, err := cp.JoinInfo()
	if err != nil {
		b.Fatal(err)
	}
	u, _ := url.Parse(cp.Endpoint)
	port, _ := strconv.Atoi(u.Port())
	fwd := []qemu.GuestForward{{Guest: apiInGuest, HostPort: port}}

	// What berth renders for this NodeConfig on a debian-12 node; kubeadm's node gets the same files.
	files := func(name string) (render.Output, *render.File) {
		nc, err := config.Merge([]config.Source{{Name: "bench", Data: []byte(nodeConfig(b, "https://"+apiInGuest, info, name))}})
		if err != nil {
			b.Fatal(err)
		}
		p, err := distro.Get("debian-12")
		if err != nil {
			b.Fatal(err)
		}
		ca, err := os.ReadFile(cp.CACertPath())
		if err != nil {
			b.Fatal(err)
		}
		c, err := config.Internal(nc, nodeconfig.Defaults{Hostname: name})
		if err != nil {
			b.Fatal(err)
		}
		in := render.Input{Config: *c, Profile: p, Endpoint: "https://" + apiInGuest, CA: ca, Paths: layout.Default()}
		out, err := render.Node(in)
		if err != nil {
			b.Fatal(err)
		}
		// A fixed pod range for kubeadm's node (a kubeadm user brings a CNI; Ready needs only its config).
		cni, err := render.CNI(in, netip.MustParsePrefix("10.244.250.0/24"))
		if err != nil {
			b.Fatal(err)
		}
		return out, cni
	}
	out, _ := files("kubelet-config")
	if err := cp.EnableKubeadmJoin(ctx, fileAt(b, out, layout.Default().KubeletConfig).Data); err != nil {
		b.Fatal(err)
	}

	var berth, kubeadm []joinTimes
	for i := range b.N {
		suffix := fmt.Sprintf("%d-%d", time.Now().Unix()%100000, i)
		berth = append(berth, joinWithBerth(b, ctx, cp, image, fwd, nodeConfig(b, "https://"+apiInGuest, info, "bench-berth-"+suffix), "bench-berth-"+suffix))
		name := "bench-kubeadm-" + suffix
		out, cni := files(name)
		kubeadm = append(kubeadm, joinWithKubeadm(b, ctx, cp, image, fwd, info, out, cni, name))
	}
	mean := func(js []joinTimes, f func(joinTimes) time.Duration) float64 {
		var sum time.Duration
		for _, j := range js {
			sum += f(j)
		}
		return (sum / time.Duration(len(js))).Seconds()
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mean(berth, joinTimes.toKubelet), "berth-start→kubelet-s")
	b.ReportMetric(mean(berth, func(j joinTimes) time.Duration { return j.containerd }), "berth-containerd-phase-s")
	b.ReportMetric(mean(berth, joinTimes.toReady), "berth-kubelet→ready-s")
	b.ReportMetric(mean(kubeadm, joinTimes.toKubelet), "kubeadm-start→kubelet-s")
	b.ReportMetric(mean(kubeadm, joinTimes.toReady), "kubeadm-kubelet→ready-s")
}

// joinWithBerth boots a guest without a NodeConfig (the agent waits), stops the agent, writes the NodeConfig
// drop-in and starts the agent: the clock starts with the agent's process.
func joinWithBerth(b *testing.B, ctx context.Context, cp *controlplane.ControlPlane, image string, fwd []qemu.GuestForward, nc, name string) joinTimes {
	g := vm.Boot(b, vm.Config{Name: name, Image: image, Format: "qcow2", GuestForwards: fwd})
	defer g.Stop()
	waitGuest(b, g, "agent waiting for a NodeConfig", "systemctl show -p StatusText berth-agent",
		func(s string) bool { return strings.Contains(s, "StatusText=waiting for a NodeConfig") })
	g.Run("systemctl stop berth-agent")
	g.Write("/etc/berth/config.d/10-user-data.yaml", []byte(nc), 0o600)
	jt := timeJoin(b, ctx, cp, g, name, "berth-agent", "systemctl start --no-block berth-agent",
		"journalctl -u berth-agent --no-pager | tail -n 40")
	var st join.Status
	if err := json.Unmarshal([]byte(g.Run("cat /var/lib/berth/status.json")), &st); err != nil {
		b.Fatal(err)
	}
	var phaseLog strings.Builder
	for _, p := range st.Phases {
		if p.Name == "containerd" {
			jt.containerd = p.Duration
		}
		fmt.Fprintf(&phaseLog, " %s=%v", p.Name, p.Duration.Round(time.Millisecond))
	}
	b.Logf("berth   %s phases:%s", name, phaseLog.String())
	b.Logf("berth   %s: start → kubelet started %v (containerd phase %v), kubelet started → Ready %v", name,
		jt.toKubelet().Round(time.Millisecond), jt.containerd.Round(time.Millisecond), jt.toReady().Round(time.Millisecond))
	return jt
}

// joinWithKubeadm boots a guest, prepares it the way a kubeadm user prepares a node (kubeadm installed with its
// kubelet drop-in, containerd configured and running, sysctls applied, a CNI config in place; the berth agent
// stopped), then runs `kubeadm join` as a transient unit: the clock starts with kubeadm's process.
func joinWithKubeadm(b *testing.B, ctx context.Context, cp *controlplane.ControlPlane, image string, fwd []qemu.GuestForward,
	info controlplane.JoinInfo, out render.Output, cni *render.File, name string) joinTimes {
	g := vm.Boot(b, vm.Config{Name: name, Image: image, Format: "qcow2", GuestForwards: fwd})
	defer g.Stop()
	g.Run("systemctl stop berth-agent")
	g.Copy(filepath.Join(toolbin.Kubernetes.ForTest(b), "kubeadm"), "/usr/local/bin/kubeadm", 0o755)
	g.Write("/etc/systemd/system/kubelet.service.d/10-kubeadm.conf", []byte(kubeadmDropIn), 0o644)
	paths := layout.Default()
	for _, f := range out.Files {
		if f.Path == paths.ContainerdConfig || f.Path == paths.Sysctls || strings.HasPrefix(f.Path, paths.RegistryHostsDir+"/") {
			g.Write(f.Path, f.Data, f.Mode)
		}
	}
	g.Write(cni.Path, cni.Data, cni.Mode)
	g.Write("/root/join.yaml", []byte(fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: %s
    token: %s
    caCertHashes: [%q]
nodeRegistration:
  name: %s
  criSocket: unix://%s
`, apiInGuest, info.Token.Value(), string(info.CACertPin), name, paths.ContainerdSocket)), 0o600)
	g.Run("sysctl --system >/dev/null && systemctl daemon-reload && systemctl restart containerd && systemctl is-active containerd")

	jt := timeJoin(b, ctx, cp, g, name, "kubeadm-join",
		"systemd-run --unit=kubeadm-join --service-type=oneshot --remain-after-exit --no-block /usr/local/bin/kubeadm join --config /root/join.yaml",
		"systemctl status kubeadm-join --no-pager; journalctl -u kubeadm-join --no-pager | tail -n 40")
	waitGuest(b, g, "kubeadm join finished", "systemctl show -p Result -p ActiveState kubeadm-join",
		func(s string) bool {
			return strings.Contains(s, "ActiveState=active") && strings.Contains(s, "Result=success")
		})
	b.Logf("kubeadm %s: start → kubelet started %v, kubelet started → Ready %v", name,
		jt.toKubelet().Round(time.Millisecond), jt.toReady().Round(time.Millisecond))
	return jt
}

// timeJoin runs start (which starts unit) in the guest and times the join: unit start → kubelet started →
// Node Ready. diag is printed if the Node never becomes Ready.
func timeJoin(b *testing.B, ctx context.Context, cp *controlplane.ControlPlane, g *vm.Guest, name, unit, start, diag string) joinTimes {
	clock := guestClock(b, g)
	g.Run(start)
	ready := waitReady(b, ctx, cp, g, name, diag)
	checkDrift(b, g, clock, ready)
	checkOneKubeletStart(b, g)
	return joinTimes{
		start:   unitTime(b, g, unit, "ExecMainStartTimestampMonotonic"),
		kubelet: unitTime(b, g, "kubelet", "ExecMainStartTimestampMonotonic"),
		ready:   clock(ready),
	}
}

// waitReady polls the Node every 50 ms until it is Ready and returns when the host saw it.
func waitReady(b *testing.B, ctx context.Context, cp *controlplane.ControlPlane, g *vm.Guest, name, diag string) time.Time {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if _, err := nodeready.Wait(ctx, cp.Client.CoreV1().Nodes(), name, 50*time.Millisecond); err != nil {
		b.Fatalf("%v:\n%s", err, tryRun(g, diag))
	}
	return time.Now()
}

// guestClock maps host times onto the guest's monotonic clock, NTP style, over one SSH session (a new SSH
// connection costs a second under TCG): of ten round trips that read the guest's uptime, the shortest gives the
// offset, with an error of at most half that round trip (logged).
func guestClock(b *testing.B, g *vm.Guest) func(time.Time) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := g.Command(ctx, "while read -r _; do cat /proc/uptime; done")
	in, err := c.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outPipe, err := c.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { in.Close(); _ = c.Wait() }()
	out := bufio.NewReader(outPipe)
	var best time.Duration
	var at time.Time
	var up time.Duration
	for i := range 11 {
		t0 := time.Now()
		if _, err := in.Write([]byte("\n")); err != nil {
			b.Fatal(err)
		}
		line, err := out.ReadString('\n')
		rtt := time.Since(t0)
		if err != nil {
			b.Fatalf("uptime from the guest: %v", err)
		}
		secs, err := strconv.ParseFloat(strings.Fields(line)[0], 64)
		if err != nil {
			b.Fatal(err)
		}
		if i == 1 || i > 1 && rtt < best { // the first answer includes the session's start
			best, at, up = rtt, t0.Add(rtt/2), time.Duration(secs*float64(time.Second))
		}
	}
	b.Logf("guest clock: best round trip %v", best.Round(time.Microsecond))
	return func(t time.Time) time.Duration { return up + t.Sub(at) }
}

// checkDrift maps t again with a fresh reading of the guest's clock and fails if the two mappings disagree by
// more than 100 ms (the guest's clock drifting from the host's during the join would skew the figures).
func checkDrift(b *testing.B, g *vm.Guest, before func(time.Time) time.Duration, t time.Time) {
	after := guestClock(b, g)
	d := after(t) - before(t)
	b.Logf("guest clock drift over the join: %v", d.Round(time.Millisecond))
	if d.Abs() > 100*time.Millisecond {
		b.Fatalf("the guest's clock drifted %v from the host's during the join", d)
	}
}

// unitTime reads a unit's monotonic timestamp property (µs).
func unitTime(b *testing.B, g *vm.Guest, unit, prop string) time.Duration {
	s := strings.TrimSpace(g.Run("systemctl show -p " + prop + " --value " + unit))
	us, err := strconv.ParseInt(s, 10, 64)
	if err != nil || us == 0 {
		b.Fatalf("%s %s = %q", unit, prop, s)
	}
	return time.Duration(us) * time.Microsecond
}

// checkOneKubeletStart fails the benchmark if the kubelet crashed and was restarted: its start time would not be
// the join's.
func checkOneKubeletStart(b *testing.B, g *vm.Guest) {
	if n := strings.TrimSpace(g.Run("systemctl show -p NRestarts --value kubelet")); n != "0" {
		b.Fatalf("the kubelet restarted %s time(s) during the join:\n%s", n, tryRun(g, "journalctl -u kubelet --no-pager | tail -n 30"))
	}
}

func fileAt(b *testing.B, out render.Output, path string) render.File {
	for _, f := range out.Files {
		if f.Path == path {
			return f
		}
	}
	b.Fatalf("berth renders no %s", path)
	return render.File{}
}
