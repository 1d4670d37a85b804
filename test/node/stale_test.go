package node

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/toolbin"
)

const helperEnv = "BERTH_NODE_TEST_HELPER"

// helperConfig is what the parent test hands its helper process (which then runs a node until it is killed).
type helperConfig struct {
	Name, Dir, Server, CAFile, Token, PodCIDR, NodeIP string
	Images                                            []string
}

// TestMain doubles as the helper process of TestKilledNodeIsCleanedUp.
func TestMain(m *testing.M) {
	if cfg := os.Getenv(helperEnv); cfg != "" {
		os.Exit(runHelper(cfg))
	}
	os.Exit(m.Run())
}

func runHelper(raw string) int {
	var h helperConfig
	if err := json.Unmarshal([]byte(raw), &h); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	bin, err := toolbin.Kubernetes.Dir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ca, err := os.ReadFile(h.CAFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tok, err := bootstraptoken.Parse(h.Token)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, err = Start(context.Background(), Config{Name: h.Name, Dir: h.Dir, BinDir: bin, Server: h.Server, CACert: ca,
		Token: tok, PodCIDR: netip.MustParsePrefix(h.PodCIDR), NodeIP: netip.MustParseAddr(h.NodeIP), Images: h.Images,
		SandboxImage: images.Pause, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("started")
	select {} // until SIGKILL
}

// A test binary killed while its node runs a pod leaves containerd, the kubelet, shims, the container, a cgroup
// tree, a bridge and an address on lo. The next run must remove all of it.
func TestKilledNodeIsCleanedUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startCluster(t, ctx)
	cp, tok, imgs, bin, log := c.cp, c.tok, c.imgs, c.bin, c.log
	x := os.Getpid()%200 + 20
	h := helperConfig{Name: "node-stale", Dir: t.TempDir(), Server: cp.Endpoint, CAFile: cp.CACertPath(), Token: tok.Value(),
		PodCIDR: fmt.Sprintf("10.202.%d.0/24", x), NodeIP: fmt.Sprintf("10.200.%d.2", x), Images: []string{imgs.Pause, imgs.Busybox}}
	raw, _ := json.Marshal(h)
	fwBefore, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(raw), "BERTH_K8S_BIN="+bin)
	cmd.Stderr = os.Stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
		sweepStale(proc.DefaultRegistry(log), log)
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("helper: %q %v", line, err)
	}

	// A pod that keeps running: its shim and container are in no process record.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: h.Name, Containers: []corev1.Container{{Name: "sleep", Image: images.Busybox,
			ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}}},
	}
	runPod(t, ctx, cp.Client, pod, corev1.PodRunning)
	sum := cgroupOf(h.Dir)
	// containerd, the kubelet and the pod's shim name the node dir in their command lines (the mount-namespace
	// holder has exec'd into sleep by now).
	if running := processesMentioning(h.Dir); len(running) < 3 {
		t.Fatalf("expected containerd, kubelet and a shim to mention the node dir, found %v", running)
	}

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed = true
	if left := processesMentioning(h.Dir); len(left) == 0 {
		t.Fatal("the node's processes died with their owner; this test needs them orphaned to mean anything")
	}

	if err := sweepStale(proc.DefaultRegistry(log), log); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if left := processesMentioning(h.Dir); len(left) > 0 {
		t.Errorf("still running after the sweep: %v", left)
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "pids", sum)); !os.IsNotExist(err) {
		t.Errorf("cgroup %s still exists (it held the container)", sum)
	}
	if out, _ := exec.Command("ip", "-o", "addr", "show", "dev", "lo").Output(); strings.Contains(string(out), h.NodeIP+"/32") {
		t.Errorf("node IP %s still on lo", h.NodeIP)
	}
	if out, _ := exec.Command("ip", "-o", "link").Output(); strings.Contains(string(out), "bn"+strings.TrimPrefix(sum, "berth-node-")) {
		t.Errorf("bridge of %s still exists", sum)
	}
	if fw, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(fw) != string(fwBefore) {
		t.Errorf("ip_forward = %q, was %q", fw, fwBefore)
	}
}

// cgroupOf returns the cgroup recorded for the node in dir.
func cgroupOf(dir string) string {
	paths, _ := filepath.Glob(filepath.Join(proc.DefaultRegistry(nil).Dir, "nodes", "*.json"))
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		var s hostState
		if json.Unmarshal(data, &s) == nil && s.Dir == dir {
			return s.Cgroup
		}
	}
	return "(no record for " + dir + ")"
}
