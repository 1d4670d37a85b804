// Package rootfs builds a distro root filesystem with mmdebstrap (one apt pass, no daemons started, no loop
// devices) and caches it as a tarball keyed by everything that determines its content, so a warm rebuild only
// extracts it (about 2 s).
package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Spec says what rootfs to build.
type Spec struct {
	Suite    string   // bookworm, xenial, ...
	Sources  []string // apt sources, "URL suite components" (the first one's suite is the target)
	Packages []string // packages to include
	// MaxAge, when set, rebuilds a cached tarball older than this, so images pick up the archive's security
	// updates; it is not part of the key (0: a cached tarball never expires).
	MaxAge time.Duration
}

// fresh reports whether a tarball last built at built may still be used at now.
func (s Spec) fresh(built, now time.Time) bool { return s.MaxAge <= 0 || now.Sub(built) < s.MaxAge }

// Key identifies the content: the same key means the same package set from the same archive.
func (s Spec) Key(tool string) string {
	pkgs := append([]string(nil), s.Packages...)
	sort.Strings(pkgs)
	h := sha256.New()
	fmt.Fprintf(h, "suite=%s\nsources=%s\npackages=%s\ntool=%s\n", s.Suite, strings.Join(s.Sources, "|"), strings.Join(pkgs, ","), tool)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Cached returns the cached tarball for spec, building it with mmdebstrap when it is missing or older than
// spec.MaxAge. Concurrent callers for the same key wait on a lock; the tarball appears (or is replaced) atomically.
func Cached(ctx context.Context, spec Spec, cacheDir string, log *slog.Logger) (path string, built bool, err error) {
	version, err := exec.Command("mmdebstrap", "--version").Output()
	if err != nil {
		return "", false, fmt.Errorf("mmdebstrap (apt package mmdebstrap; `make deps` installs it): %w", err)
	}
	key := spec.Key(strings.TrimSpace(string(version)))
	path = filepath.Join(cacheDir, spec.Suite+"-"+key+".tar")
	usable := func() bool {
		st, err := os.Stat(path)
		return err == nil && spec.fresh(st.ModTime(), time.Now())
	}
	if usable() {
		return path, false, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", false, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", false, fmt.Errorf("lock %s: %w", path, err)
	}
	if usable() {
		return path, false, nil
	}
	if st, err := os.Stat(path); err == nil {
		log.Info("cached rootfs is older than its max age; rebuilding", "built", st.ModTime().UTC().Format(time.RFC3339), "maxAge", spec.MaxAge)
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	args := []string{
		"--variant=minbase", "--mode=root", "--format=tar",
		"--aptopt=Acquire::Languages \"none\"",
		"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*",
		"--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-include=/usr/share/doc/*/copyright",
		"--include=" + strings.Join(spec.Packages, ","),
		spec.Suite, tmp,
	}
	for _, s := range spec.Sources {
		args = append(args, "deb "+s)
	}
	t0 := time.Now()
	log.Info("building rootfs with mmdebstrap (cached afterwards)", "suite", spec.Suite, "packages", len(spec.Packages), "cache", path)
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return "", false, fmt.Errorf("mmdebstrap %s: %w\n%s", spec.Suite, err, tail(string(out), 30))
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", false, err
	}
	log.Info("rootfs built", "suite", spec.Suite, "took", time.Since(t0).Round(time.Second))
	return path, true, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
