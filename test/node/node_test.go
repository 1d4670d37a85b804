package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/images"
)

// The real proof of the foundation: the pinned kubelet with Debian's containerd and runc TLS-bootstraps from a
// bootstrap token, registers, becomes Ready and runs a pod from a locally built, pre-imported image; the
// apiserver reaches the kubelet for the pod's logs; teardown leaves nothing behind on the host.
func TestKubeletJoinsAndRunsPod(t *testing.T) {
	for _, bin := range []string{"containerd", "runc", "ctr", "containerd-shim-runc-v2", "/usr/lib/cni/bridge", "/bin/busybox"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s missing (`make deps` installs containerd, runc, containernetworking-plugins, busybox-static): %v", bin, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := startCluster(t, ctx)
	cp, tok, imgs, bin, log := c.cp, c.tok, c.imgs, c.bin, c.log
	ca, err := os.ReadFile(cp.CACertPath())
	if err != nil {
		t.Fatal(err)
	}

	// Addresses unique to this process, so parallel test binaries do not collide; all on lo or a private bridge.
	x := os.Getpid()%200 + 20
	nodeIP := netip.MustParseAddr(fmt.Sprintf("10.200.%d.1", x))
	fwBefore, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	reg := proc.DefaultRegistry(log)
	dir := t.TempDir()
	n, err := Start(ctx, Config{
		Name: "node-a", Dir: dir, BinDir: bin,
		Server: cp.Endpoint, CACert: ca, Token: tok,
		PodCIDR: netip.MustParsePrefix(fmt.Sprintf("10.201.%d.0/24", x)), NodeIP: nodeIP,
		Images: []string{imgs.Pause, imgs.Busybox}, SandboxImage: images.Pause,
		Registry: &reg, Log: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range []string{"containerd", "kubelet"} {
				t.Logf("--- %s log (tail):\n%s", c, proc.Tail(n.LogPath(c), 40))
			}
			if p, err := cp.Client.CoreV1().Pods("default").Get(context.Background(), "hello", metav1.GetOptions{}); err == nil {
				t.Logf("pod status: %+v", p.Status)
			}
		}
		if !stopped {
			n.Stop()
		}
	})

	start := time.Now()
	node, err := n.WaitReady(ctx, cp.Client)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node Ready %v after the kubelet started", time.Since(start).Round(time.Millisecond))
	if v := node.Status.NodeInfo.KubeletVersion; v != "v1.37.2" {
		t.Errorf("kubelet version = %s, want v1.37.2", v)
	}
	// The kubelet got its client certificate through an approved bootstrap CSR.
	csrs, err := cp.Client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	issued := false
	for _, c := range csrs.Items {
		if c.Spec.Username == "system:bootstrap:"+tok.ID() && c.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName && len(c.Status.Certificate) > 0 {
			issued = true
		}
	}
	if !issued {
		t.Errorf("no issued kubelet client CSR from system:bootstrap:%s among %d CSRs", tok.ID(), len(csrs.Items))
	}
	if _, err := os.Stat(n.KubeconfigPath()); err != nil {
		t.Errorf("kubelet did not write its kubeconfig after bootstrap: %v", err)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: "default"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "hello", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", "echo hello from $(hostname)"}}},
		},
	}
	p := runPod(t, ctx, cp.Client, pod, corev1.PodSucceeded)
	if p.Spec.NodeName != "node-a" || !strings.HasPrefix(p.Status.PodIP, fmt.Sprintf("10.201.%d.", x)) {
		t.Errorf("pod ran on %q with IP %q; want node-a and an IP from the node's pod CIDR", p.Spec.NodeName, p.Status.PodIP)
	}
	logs, err := cp.Client.CoreV1().Pods("default").GetLogs("hello", &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatalf("pod logs through the apiserver: %v", err)
	}
	if got := strings.TrimSpace(string(logs)); got != "hello from hello" {
		t.Errorf("pod logs = %q, want %q", got, "hello from hello")
	}

	// Teardown leaves the host as it was.
	stopped = true
	if err := n.Stop(); err != nil {
		t.Fatalf("stop node: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "pids", n.host.Cgroup)); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still exists", n.host.Cgroup)
	}
	if _, err := os.Stat("/sys/class/net/" + n.host.Bridge); !os.IsNotExist(err) {
		t.Errorf("bridge %s still exists", n.host.Bridge)
	}
	if out, _ := exec.Command("ip", "-o", "addr", "show", "dev", "lo").Output(); strings.Contains(string(out), nodeIP.String()+"/32") {
		t.Errorf("node IP %s still on lo", nodeIP)
	}
	if fw, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(fw) != string(fwBefore) {
		t.Errorf("ip_forward = %q, was %q", fw, fwBefore)
	}
	recs, _, _ := reg.Records()
	for _, r := range recs {
		if r.Group == dir {
			t.Errorf("process record left: %+v", r)
		}
	}
	// Shims and containers are not in the registry; none may survive (zombies aside: this host's PID 1 does not
	// reap, and they hold nothing).
	if left := processesMentioning(dir); len(left) > 0 {
		t.Errorf("processes still running from the node dir: %v", left)
	}
}

func processesMentioning(s string) []string {
	matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, m := range matches {
		pid := filepath.Base(filepath.Dir(m))
		if pid == fmt.Sprint(os.Getpid()) {
			continue
		}
		cmdline, err := os.ReadFile(m)
		if err != nil || len(cmdline) == 0 { // gone, or a zombie
			continue
		}
		if strings.Contains(string(cmdline), s) {
			out = append(out, pid+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}
