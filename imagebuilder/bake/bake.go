// Package bake is the disk builder's pipeline as plain phases over an explicit state: versions (the binaries
// say the declared Kubernetes version), rootfs (cached mmdebstrap), extract, install the payload (and pre-cache images), seal, manifest, disk, convert, boot check. The Packer
// builder runs each phase as one step; tests run them directly.
package bake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"berth.dev/berth/imagebuilder/bootcheck"
	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/install"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/imagebuilder/rootfs"
)

// Spec is everything a bake needs, validated.
type Spec struct {
	Name     string // image base name: <OutputDir>/<Name>.raw, .qcow2, .vhd, <Name>.manifest.json
	Profile  distro.Profile
	Mirror   string // replaces the profile's main archive (empty: the profile's)
	Inputs   payload.Inputs
	Layout   disk.Layout
	Formats  []disk.Format
	Compress bool // compress qcow2

	OutputDir, WorkDir, CacheDir string
	// RootfsMaxAge rebuilds a cached rootfs older than this (0: never), so images pick up security updates.
	RootfsMaxAge time.Duration

	// KubernetesVersion is what kubelet/kube-proxy --version must say (checked before the bake and at boot).
	KubernetesVersion string
	// SandboxImage is the pause image's name (it must be among the pre-cached images).
	SandboxImage string
	BootCheck    bool
	BootTimeout  time.Duration
	Log          *slog.Logger
}

// DefaultCacheDir is where caches (the rootfs tarballs) live: $BERTH_CACHE, else ~/.cache/berth, the same
// place tools/build.sh uses.
func DefaultCacheDir() string {
	if d := os.Getenv("BERTH_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "berth")
}

// State is what the phases produce.
type State struct {
	RootfsTar    string // cached rootfs tarball
	RootfsCached bool   // the tarball came from the cache
	Root         string // extracted tree
	Payload      payload.Payload
	Images       []string // image names in containerd's k8s.io namespace
	Raw          string
	Outputs      map[disk.Format]string
	Manifest     Manifest
	BootCheck    *bootcheck.Result
	Timings      []Timing
}

// Timing is how long a phase took.
type Timing struct {
	Phase string
	Took  time.Duration
}

// Phase is one step of the bake.
type Phase struct {
	Name string
	Run  func(ctx context.Context, s *Spec, st *State) error
}

// Phases is the bake, in order.
var Phases = []Phase{
	{"versions", Versions},
	{"rootfs", Rootfs},
	{"extract", Extract},
	{"install", Install},
	{"seal", Seal},
	{"manifest", WriteManifest},
	{"disk", Disk},
	{"convert", Convert},
	{"bootcheck", BootCheck},
}

// RunAll runs every phase; on error the partial outputs are removed.
func RunAll(ctx context.Context, s *Spec) (*State, error) {
	st := &State{}
	for i, p := range Phases {
		t0 := time.Now()
		s.Log.Info("bake phase", "step", fmt.Sprintf("%d/%d", i+1, len(Phases)), "phase", p.Name)
		if err := p.Run(ctx, s, st); err != nil {
			Cleanup(s, st, true)
			return st, fmt.Errorf("%s: %w", p.Name, err)
		}
		st.Timings = append(st.Timings, Timing{p.Name, time.Since(t0)})
		s.Log.Info("bake phase done", "phase", p.Name, "took", time.Since(t0).Round(time.Millisecond))
	}
	Cleanup(s, st, false)
	return st, nil
}

// Cleanup removes the work tree, and the outputs too when the bake failed.
func Cleanup(s *Spec, st *State, failed bool) {
	if st.Root != "" {
		os.RemoveAll(filepath.Dir(st.Root))
	}
	if failed {
		for _, p := range st.Outputs {
			os.Remove(p)
		}
		if st.Raw != "" {
			os.Remove(st.Raw)
		}
		os.Remove(manifestPath(s))
	}
}

// Versions checks, before anything is built, that the kubelet and kube-proxy to install say the declared
// KubernetesVersion, which the boot check would otherwise find only minutes later. A binary this machine cannot
// run (another architecture) is left to the boot check, with a warning.
func Versions(ctx context.Context, s *Spec, st *State) error {
	want := "Kubernetes " + s.KubernetesVersion
	var errs []error
	for _, bin := range []string{s.Inputs.KubeletPath, s.Inputs.KubeProxyPath} {
		if bin == "" {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		out, err := exec.CommandContext(vctx, bin, "--version").Output()
		cancel()
		switch {
		case errors.Is(err, syscall.ENOEXEC):
			s.Log.Warn("cannot run this binary here (another architecture?): its version is left to the boot check", "binary", bin)
		case err != nil:
			errs = append(errs, fmt.Errorf("%s --version: %w", bin, err))
		default:
			if got := strings.TrimSpace(string(out)); got != want {
				errs = append(errs, fmt.Errorf("%s --version says %q, but the image is declared for Kubernetes %s (kubernetes_version)", bin, got, s.KubernetesVersion))
			}
		}
	}
	return errors.Join(errs...)
}

// Rootfs gets the cached rootfs tarball, building it with mmdebstrap if needed.
func Rootfs(ctx context.Context, s *Spec, st *State) error {
	spec := rootfs.Spec{Suite: s.Profile.Suite, Sources: s.Profile.WithMirror(s.Mirror), Packages: s.Profile.AllPackages(), MaxAge: s.RootfsMaxAge}
	path, built, err := rootfs.Cached(ctx, spec, filepath.Join(s.CacheDir, "rootfs"), s.Log)
	st.RootfsTar, st.RootfsCached = path, !built
	return err
}

// Extract unpacks the rootfs into a fresh work tree.
func Extract(ctx context.Context, s *Spec, st *State) error {
	if err := os.MkdirAll(s.WorkDir, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(s.WorkDir, s.Name+"-")
	if err != nil {
		return err
	}
	st.Root = filepath.Join(work, "root")
	if err := os.Mkdir(st.Root, 0o755); err != nil {
		return err
	}
	return run(ctx, "tar", "-x", "-p", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-f", st.RootfsTar, "-C", st.Root)
}

// Install runs the one install sequence (imagebuilder/install) into the tree: packages dpkg lacks (none, after
// mmdebstrap), the payload's files, its .deb packages with the tree's dpkg and starts denied (no systemd runs in
// the chroot either), and its images into the tree's containerd store; the sandbox image must be among them.
func Install(ctx context.Context, s *Spec, st *State) error {
	pl, err := payload.Build(s.Profile, s.Inputs)
	if err != nil {
		return err
	}
	st.Payload = pl
	res, err := install.Run(ctx, install.Tree{Root: st.Root}, pl, s.Profile, install.Options{InstallPackages: true, SandboxImage: s.SandboxImage,
		Say: func(msg string) { s.Log.Info("install: " + msg) }})
	st.Images = res.Images
	return err
}

// Seal runs the hygiene script in the tree and checks its result offline.
func Seal(ctx context.Context, s *Spec, st *State) error {
	if err := (install.Tree{Root: st.Root}).Shell(ctx, payload.SealScript); err != nil {
		return err
	}
	var errs []error
	if data, err := os.ReadFile(filepath.Join(st.Root, "etc/machine-id")); err != nil || len(data) != 0 {
		errs = append(errs, fmt.Errorf("/etc/machine-id is not empty after sealing (%q, %v)", data, err))
	}
	if keys, _ := filepath.Glob(filepath.Join(st.Root, "etc/ssh/ssh_host_*")); len(keys) > 0 {
		errs = append(errs, fmt.Errorf("SSH host keys left in the image: %v", keys))
	}
	if entries, _ := os.ReadDir(filepath.Join(st.Root, "var/lib/cloud")); len(entries) > 0 {
		errs = append(errs, errors.New("cloud-init state left in /var/lib/cloud"))
	}
	if data, err := os.ReadFile(filepath.Join(st.Root, "etc/hostname")); err != nil || string(data) != "localhost\n" {
		errs = append(errs, fmt.Errorf("/etc/hostname is %q after sealing (%v), want localhost", data, err))
	}
	if fi, err := os.Lstat(filepath.Join(st.Root, "etc/resolv.conf")); err == nil && fi.Mode().IsRegular() {
		if data, _ := os.ReadFile(filepath.Join(st.Root, "etc/resolv.conf")); strings.Contains(string(data), "nameserver") {
			errs = append(errs, fmt.Errorf("/etc/resolv.conf keeps the build machine's nameservers: %q", data))
		}
	}
	return errors.Join(errs...)
}

// Disk assembles the raw disk.
func Disk(ctx context.Context, s *Spec, st *State) error {
	if err := os.MkdirAll(s.OutputDir, 0o755); err != nil {
		return err
	}
	st.Raw = filepath.Join(s.OutputDir, s.Name+".raw")
	return disk.Assemble(ctx, disk.Exec{}, st.Root, st.Raw, s.Layout)
}

// Convert writes the other formats; the raw disk stays only if it was asked for.
func Convert(ctx context.Context, s *Spec, st *State) error {
	st.Outputs = map[disk.Format]string{}
	keepRaw := false
	for _, f := range s.Formats {
		if f == disk.Raw {
			keepRaw = true
			st.Outputs[f] = st.Raw
			continue
		}
		out := filepath.Join(s.OutputDir, s.Name+"."+string(f))
		if err := disk.Convert(ctx, disk.Exec{}, st.Raw, out, f, s.Compress); err != nil {
			return err
		}
		st.Outputs[f] = out
	}
	if err := st.Manifest.addOutputs(st.Outputs); err != nil {
		return err
	}
	if err := writeManifestFile(s, st); err != nil {
		return err
	}
	if !keepRaw {
		// The boot check still needs a disk: it boots the first output instead.
		defer os.Remove(st.Raw)
	}
	return nil
}

// BootCheck boots the first output and runs the checks; any failure fails the bake.
func BootCheck(ctx context.Context, s *Spec, st *State) error {
	if !s.BootCheck {
		s.Log.Warn("boot check disabled: this image has not been booted")
		return nil
	}
	f := s.Formats[0]
	format := map[disk.Format]string{disk.Raw: "raw", disk.QCOW2: "qcow2", disk.VHD: "vpc"}[f]
	packages := map[string]string{}
	for _, p := range st.Payload.Packages {
		packages[p.Name] = p.Version
	}
	dir := filepath.Join(s.WorkDir, s.Name+"-bootcheck")
	defer os.RemoveAll(dir)
	res, err := bootcheck.Run(ctx, st.Outputs[f], format, dir, bootcheck.Expect{
		KubernetesVersion: s.KubernetesVersion, SandboxImage: s.SandboxImage, Images: st.Images, Units: st.Payload.Units(),
		Packages: packages,
	}, s.BootTimeout)
	st.BootCheck = &res
	if err != nil {
		return fmt.Errorf("boot check: %w", err)
	}
	if failed := res.Failed(); len(failed) > 0 {
		var lines []string
		for _, c := range failed {
			lines = append(lines, c.Name+": "+c.Detail)
		}
		return fmt.Errorf("boot check failed %d of %d checks:\n  %s", len(failed), len(res.Checks), strings.Join(lines, "\n  "))
	}
	s.Log.Info("boot check passed", "checks", len(res.Checks), "took", res.Took.Round(time.Second))
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	return disk.Exec{}.Run(ctx, name, args...)
}
