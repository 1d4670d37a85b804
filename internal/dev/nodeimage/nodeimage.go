// Package nodeimage bakes the local cloud's node image: Debian 12 with the pinned kubelet and kube-proxy, a
// berth-agent binary, and the pause, busybox, CoreDNS, log shipper (berth-logs) and agent images, on a 3072 MiB disk, with the machine's shared rootfs
// cache. berth-dev image runs Bake; tests (test/nodeimage) bake the same Spec.
package nodeimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"berth.dev/berth/agent/componentimage"
	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/internal/dev/clusterdns"
	"berth.dev/berth/internal/dev/images"
	"berth.dev/berth/internal/dev/toolcache"
	"berth.dev/berth/internal/node/atomicfile"
)

// Sources are what the local cloud's node image is made of besides Debian's packages.
type Sources struct {
	// K8sBin holds the pinned kubelet and kube-proxy.
	K8sBin string
	// Agent is the static berth-agent binary.
	Agent string
	// Logs is the static berth-logs binary, made into the log shipper's image (layout.LogsImage).
	Logs string
	// PauseImage is the pause image's tarball (berth-pause image).
	PauseImage string
	// CoreDNS is the coredns binary (tools/build.sh coredns), made into the cluster DNS image.
	CoreDNS string
}

func (s Sources) files() []string {
	return []string{s.Agent, s.Logs, s.PauseImage, s.CoreDNS, filepath.Join(s.K8sBin, "kubelet"), filepath.Join(s.K8sBin, "kube-proxy")}
}

// Inputs are the bake's inputs from src; the images made here (busybox, CoreDNS, the log shipper's and the agent's) are written
// into dir.
func Inputs(src Sources, dir string) (payload.Inputs, error) {
	busybox, coredns := filepath.Join(dir, "busybox.oci.tar"), filepath.Join(dir, "coredns.oci.tar")
	logs, agent := filepath.Join(dir, "berth-logs.oci.tar"), filepath.Join(dir, "berth-agent.oci.tar")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return payload.Inputs{}, err
	}
	if err := images.WriteBusybox(busybox); err != nil {
		return payload.Inputs{}, err
	}
	if err := clusterdns.WriteImage(src.CoreDNS, coredns); err != nil {
		return payload.Inputs{}, err
	}
	if src.Logs == "" {
		return payload.Inputs{}, errors.New("the berth-logs binary (Sources.Logs) is required")
	}
	if _, err := componentimage.Logs.Write(logs, src.Logs); err != nil {
		return payload.Inputs{}, err
	}
	if _, err := componentimage.Agent.Write(agent, src.Agent); err != nil {
		return payload.Inputs{}, err
	}
	return payload.Inputs{KubeletPath: filepath.Join(src.K8sBin, "kubelet"), KubeProxyPath: filepath.Join(src.K8sBin, "kube-proxy"),
		AgentPath: src.Agent, Images: []string{src.PauseImage, busybox, coredns, logs, agent}}, nil
}

// Spec is the bake of in as the local cloud has it: Debian 12, a 3072 MiB disk, qcow2 only, the machine's shared
// rootfs cache, output and scratch in out and work.
func Spec(in payload.Inputs, out, work string, log *slog.Logger) (*bake.Spec, error) {
	p, err := distro.Get("debian-12")
	if err != nil {
		return nil, err
	}
	return &bake.Spec{Name: "node", Profile: p, Inputs: in,
		Layout:  disk.Layout{SizeMiB: 3072, RootUUID: "6b1c7e2a-3f4d-4c5b-9a8e-1d2c3b4a5f60", Ext4Features: p.Ext4Features},
		Formats: []disk.Format{disk.QCOW2}, OutputDir: out, WorkDir: work, CacheDir: bake.DefaultCacheDir(),
		KubernetesVersion: "v" + toolcache.KubernetesVersion, SandboxImage: images.Pause, BootTimeout: 6 * time.Minute, Log: log,
	}, nil
}

// Bake bakes the local cloud's node image (berth-dev image) from src into dir/node.qcow2 (dir/work is the scratch space, removed after). When dir already
// holds an image baked from the same inputs (dir/node.inputs records their fingerprint: this program, which holds
// the bake, and every file of src), that image is returned with reused set. A new image replaces
// the old one by rename, so guests still running on the old one keep their backing file.
//
// One bake at a time per dir (a lock file, dir/node.lock): a second caller waits, then finds the image the first
// baked, so tests and users that ask for the same image at once bake it once.
func Bake(ctx context.Context, src Sources, dir string, log *slog.Logger) (path string, reused bool, err error) {
	img, stamp := filepath.Join(dir, "node.qcow2"), filepath.Join(dir, "node.inputs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	unlock, err := lock(ctx, filepath.Join(dir, "node.lock"), log)
	if err != nil {
		return "", false, err
	}
	defer unlock()
	self, err := os.Executable()
	if err != nil {
		return "", false, err
	}
	fp, err := fingerprint(append([]string{self}, src.files()...)...)
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
	in, err := Inputs(src, filepath.Join(work, "images"))
	if err != nil {
		return "", false, err
	}
	s, err := Spec(in, filepath.Join(work, "out"), filepath.Join(work, "bake"), log)
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

// lock takes an exclusive lock on path (flock: the kernel drops it when the process dies), waiting while another
// process holds it, until ctx ends.
func lock(ctx context.Context, path string, log *slog.Logger) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for waited := false; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !waited {
			log.Info("another bake of this image is running; waiting for it", "lock", path)
			waited = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-tick.C:
		}
	}
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
