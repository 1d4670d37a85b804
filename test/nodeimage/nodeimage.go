// Package nodeimage describes the Debian 12 node image the tests bake: the pinned kubelet and kube-proxy, the
// berth-agent built from this tree, and the locally built pause and busybox images, on a 3072 MiB disk, with the
// machine's shared rootfs cache. Tests adjust the formats, the boot check and the log.
package nodeimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
)

// Inputs builds what a test node image carries. Build them once per test: the agent and images are built here.
func Inputs(tb testing.TB) payload.Inputs {
	tb.Helper()
	in, err := inputs(toolbin.Kubernetes.ForTest(tb), toolbin.Agent(tb), tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

func inputs(k8sBin, agent, dir string) (payload.Inputs, error) {
	imgs, err := images.Build(dir)
	if err != nil {
		return payload.Inputs{}, err
	}
	return payload.Inputs{KubeletPath: filepath.Join(k8sBin, "kubelet"), KubeProxyPath: filepath.Join(k8sBin, "kube-proxy"),
		AgentPath: agent, Images: []string{imgs.Pause, imgs.Busybox}}, nil
}

// Spec is a bake of in: qcow2 only, no boot check, fresh output and work dirs, the shared rootfs cache, warnings
// logged to stderr.
func Spec(tb testing.TB, in payload.Inputs) *bake.Spec {
	tb.Helper()
	tier.Require(tb, tier.Root, tier.QEMU) // mmdebstrap chroot, dpkg in the tree, the boot check
	s, err := spec(in, tb.TempDir(), tb.TempDir(), slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func spec(in payload.Inputs, out, work string, log *slog.Logger) (*bake.Spec, error) {
	p, err := distro.Get("debian-12")
	if err != nil {
		return nil, err
	}
	return &bake.Spec{Name: "node", Profile: p, Inputs: in,
		Layout:  disk.Layout{SizeMiB: 3072, RootUUID: "6b1c7e2a-3f4d-4c5b-9a8e-1d2c3b4a5f60", Ext4Features: p.Ext4Features},
		Formats: []disk.Format{disk.QCOW2}, OutputDir: out, WorkDir: work, CacheDir: bake.DefaultCacheDir(),
		KubernetesVersion: "v1.37.2", SandboxImage: images.Pause, BootTimeout: 6 * time.Minute, Log: log,
	}, nil
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

// Bake is QCOW2 for tools (berth-dev image): the pinned Kubernetes binaries in k8sBin, the agent binary, the
// locally built images, baked into dir/node.qcow2 (dir/work is the scratch space, removed after). When dir already
// holds an image baked from the same inputs (dir/node.inputs records their fingerprint: this program, which holds
// the bake, the agent, the kubelet and kube-proxy), that image is returned with reused set. A new image replaces
// the old one by rename, so guests still running on the old one keep their backing file.
func Bake(ctx context.Context, k8sBin, agent, dir string, log *slog.Logger) (path string, reused bool, err error) {
	img, stamp := filepath.Join(dir, "node.qcow2"), filepath.Join(dir, "node.inputs")
	self, err := os.Executable()
	if err != nil {
		return "", false, err
	}
	fp, err := fingerprint(self, agent, filepath.Join(k8sBin, "kubelet"), filepath.Join(k8sBin, "kube-proxy"))
	if err != nil {
		return "", false, err
	}
	if old, err := os.ReadFile(stamp); err == nil && string(old) == fp {
		if _, err := os.Stat(img); err == nil {
			return img, true, nil
		}
	}
	work := filepath.Join(dir, "work")
	if err := os.RemoveAll(work); err != nil {
		return "", false, err
	}
	defer os.RemoveAll(work)
	in, err := inputs(k8sBin, agent, filepath.Join(work, "images"))
	if err != nil {
		return "", false, err
	}
	s, err := spec(in, filepath.Join(work, "out"), filepath.Join(work, "bake"), log)
	if err != nil {
		return "", false, err
	}
	if _, err := bake.RunAll(ctx, s); err != nil {
		return "", false, err
	}
	// The stamp goes first and comes back last: an interrupted swap bakes again next time.
	if err := os.Remove(stamp); err != nil && !os.IsNotExist(err) {
		return "", false, err
	}
	for _, name := range []string{"node.qcow2", "node.manifest.json"} {
		if err := os.Rename(filepath.Join(s.OutputDir, name), filepath.Join(dir, name)); err != nil {
			return "", false, err
		}
	}
	return img, false, atomicfile.Write(stamp, []byte(fp), 0o644)
}

// fingerprint is the sha256 over the files' sha256s.
func fingerprint(paths ...string) (string, error) {
	all := sha256.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		fmt.Fprintf(all, "%x\n", h.Sum(nil))
	}
	return hex.EncodeToString(all.Sum(nil)), nil
}
