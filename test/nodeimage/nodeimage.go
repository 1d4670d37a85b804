// Package nodeimage bakes, for tests, the local cloud's node image (internal/dev/nodeimage's Spec) with the
// berth-agent and pause image built from this tree. Tests adjust the formats, the boot check and the log.
package nodeimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/payload"
	devnodeimage "berth.dev/berth/internal/dev/nodeimage"
	"berth.dev/berth/internal/dev/toolcache"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
)

// Inputs builds what a test node image carries. Build them once per test: the agent and images are built here.
func Inputs(tb testing.TB) payload.Inputs {
	tb.Helper()
	src := devnodeimage.Sources{K8sBin: toolbin.Kubernetes.ForTest(tb), Agent: toolbin.Agent(tb), Logs: toolbin.Logs(tb),
		CoreDNS: filepath.Join(toolbin.CoreDNS.ForTest(tb), "coredns")}
	dir := tb.TempDir()
	imgs, err := images.Build(dir)
	if err != nil {
		tb.Fatal(err)
	}
	src.PauseImage = imgs.Pause
	in, err := devnodeimage.Inputs(src, dir)
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

// Spec is a bake of in: qcow2 only, no boot check, fresh output and work dirs, the shared rootfs cache, warnings
// logged to stderr.
func Spec(tb testing.TB, in payload.Inputs) *bake.Spec {
	tb.Helper()
	tier.Require(tb, tier.Root, tier.QEMU) // mmdebstrap chroot, dpkg in the tree, the boot check
	s, err := devnodeimage.Spec(in, tb.TempDir(), tb.TempDir(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// QCOW2 returns the tests' node image as `berth-dev image` bakes it for `make demo`: this tree's berth-dev, agent,
// log shipper and pause image, the pinned kubelet, kube-proxy and CoreDNS. Every test of a run shares it: it
// lives in the tool cache in a directory named for those inputs (Dir), where berth-dev bakes it once (its lock
// makes a concurrent caller wait for that bake) and reuses it after. The boot check is left out: the bake tests
// cover it, and callers boot the image themselves.
func QCOW2(tb testing.TB) string {
	tb.Helper()
	tier.Require(tb, tier.Root, tier.QEMU) // mmdebstrap chroot, dpkg in the tree, qemu-img
	dev := filepath.Join(tb.TempDir(), "berth-dev")
	if out, err := exec.Command("go", "build", "-o", dev, "berth.dev/berth/cmd/berth-dev").CombinedOutput(); err != nil {
		tb.Fatalf("build berth-dev: %v\n%s", err, out)
	}
	agent, logs := toolbin.Agent(tb), toolbin.Logs(tb)
	imgs, err := images.Build(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(dev, "image", "-agent", agent, "-logs", logs, "-pause", imgs.Pause, "-o", Dir(tb, dev, agent, logs, imgs.Pause),
		"-k8s-bin", toolbin.Kubernetes.ForTest(tb), "-coredns-bin", toolbin.CoreDNS.ForTest(tb))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("berth-dev image: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// Dir is where the test node image baked from these files (berth-dev, which holds the bake, and the binaries and
// images given to `berth-dev image`) lives: the tool cache's test-images/<their hash>. Directories of other
// inputs unused for three days are removed (each is a 3 GiB sparse qcow2's worth).
func Dir(tb testing.TB, files ...string) string {
	tb.Helper()
	all := sha256.New()
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(all, "%x\n", sha256.Sum256(data))
	}
	root := filepath.Join(toolcache.Dir(), "test-images")
	dir := filepath.Join(root, hex.EncodeToString(all.Sum(nil))[:16])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	now := time.Now()
	if err := os.Chtimes(dir, now, now); err != nil { // in use
		tb.Fatal(err)
	}
	old, _ := os.ReadDir(root)
	for _, e := range old {
		if fi, err := e.Info(); err == nil && e.IsDir() && now.Sub(fi.ModTime()) > 72*time.Hour {
			os.RemoveAll(filepath.Join(root, e.Name()))
		}
	}
	return dir
}
