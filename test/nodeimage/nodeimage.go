// Package nodeimage bakes, for tests, the local cloud's node image (internal/dev/nodeimage's Spec) with the
// berth-agent and pause image built from this tree. Tests adjust the formats, the boot check and the log.
package nodeimage

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/imagebuilder/payload"
	devnodeimage "berth.dev/berth/internal/dev/nodeimage"
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

// QCOW2 bakes the tests' node image with the phases the berth-disk builder runs (the rootfs cache makes it a
// warm bake) and returns the qcow2 disk. The boot check is left out: the bake tests cover it, and callers boot
// the image themselves.
func QCOW2(tb testing.TB) string {
	tb.Helper()
	tier.Require(tb, tier.Root, tier.QEMU) // mmdebstrap chroot, dpkg in the tree, qemu-img
	st, err := bake.RunAll(context.Background(), Spec(tb, Inputs(tb)))
	if err != nil {
		tb.Fatalf("bake: %v", err)
	}
	return st.Outputs[disk.QCOW2]
}
