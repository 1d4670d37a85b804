// Package health probes mounted shares the way a pod would find them broken, and heals the broken ones: a probe
// is a statx of the mount point (AT_STATX_FORCE_SYNC: the attributes fetched from the server, not from the
// client's cache, which answers for a dead share for as long as actimeo) under a deadline, in a goroutine of its
// own, so a hung server costs the loop one deadline, never a stuck loop. ENOTCONN, ESTALE, EIO, EHOSTDOWN and their
// kin (mount-utils' IsCorruptedMnt set) are a dead mount; a probe past its deadline is a hung one. Each broken
// share is healed (remounted) with exponential backoff, without touching the pods that use it.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"berth.dev/berth/agent/shares/mountsys"
)

// State is what a probe found.
type State int

const (
	// OK: the mount answered.
	OK State = iota
	// Dead: the mount answered with an error that only a remount cures.
	Dead
	// Hung: the mount did not answer within the deadline.
	Hung
	// Failed: another error (the path is gone, permission): not the mount's fault, not healed.
	Failed
)

func (s State) String() string {
	return [...]string{"ok", "dead", "hung", "failed"}[s]
}

// Result is one probe's outcome.
type Result struct {
	State State
	Err   error
	Took  time.Duration
}

// corrupted are the errors of a mount that needs remounting (mount-utils' IsCorruptedMnt, and ECONNABORTED,
// ECONNRESET, ETIMEDOUT that a cifs mount returns while its session is gone).
var corrupted = []error{unix.ENOTCONN, unix.ESTALE, unix.EIO, unix.EACCES, unix.EHOSTDOWN, unix.EWOULDBLOCK, unix.ENODEV,
	unix.ECONNABORTED, unix.ECONNRESET, unix.ETIMEDOUT, unix.EHOSTUNREACH}

// Stat is the probe's system call (unix.Statx in production; tests pass a fake to hang or fail).
type Stat func(path string) error

// Statx stats path, its attributes fetched from the server (on a local file system, a plain stat). It asks for
// the basic attributes: the NFS client answers a request for the file type alone from its cache, even when forced
// to sync, and a stale share would pass. A stat a signal interrupts is made again (mountsys.Retry): it is no answer
// from the server.
func Statx(path string) error {
	var st unix.Statx_t
	return mountsys.Retry(context.Background(), func() error {
		return unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_FORCE_SYNC|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st)
	})
}

// Mounted wraps stat: a path that is no longer a mount point (its mount lost, or detached by a heal whose remount
// failed) is a dead share, not an empty directory that answers. isMounted must not touch the file system under
// path (read mountinfo).
func Mounted(isMounted func(path string) (bool, error), stat Stat) Stat {
	return func(path string) error {
		if m, err := isMounted(path); err == nil && !m {
			return fmt.Errorf("%s: not mounted: %w", path, unix.ENOTCONN)
		}
		return stat(path)
	}
}

// Probe stats path within timeout. A probe that hangs is left to finish in its goroutine (a stat in the kernel
// cannot be cancelled); the caller is not held.
func Probe(stat Stat, path string, timeout time.Duration) Result {
	t0 := time.Now()
	done := make(chan error, 1)
	go func() { done <- stat(path) }()
	select {
	case err := <-done:
		r := Result{Err: err, Took: time.Since(t0)}
		switch {
		case err == nil:
			r.State = OK
		case isCorrupted(err):
			r.State = Dead
		default:
			r.State = Failed
		}
		return r
	case <-time.After(timeout):
		return Result{State: Hung, Err: fmt.Errorf("no answer in %v", timeout), Took: time.Since(t0)}
	}
}

func isCorrupted(err error) bool {
	for _, c := range corrupted {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}

// Target is one mount the loop watches.
type Target struct {
	Key  string // the share's key
	Path string // its mount point
}

// Config is the loop's.
type Config struct {
	Interval time.Duration // between rounds
	Timeout  time.Duration // one probe's deadline
	// MinBackoff and MaxBackoff bound the wait before healing a share again after a failed heal.
	MinBackoff, MaxBackoff time.Duration
	Stat                   Stat
	// Targets lists the mounts to probe, each round (the staged shares).
	Targets func() []Target
	// Heal remounts a broken share.
	Heal func(ctx context.Context, t Target, r Result) error
	// Observe sees every probe (metrics).
	Observe func(t Target, r Result)
	Log     *slog.Logger
	Now     func() time.Time
}

// Run probes every target each interval and heals the broken ones, until ctx ends.
func Run(ctx context.Context, cfg Config) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	next := map[string]time.Time{}        // a share's earliest next heal
	backoff := map[string]time.Duration{} // its current backoff
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		Round(ctx, cfg, next, backoff)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Round is one pass over the targets: probe each, heal what is broken unless its backoff has not passed; a
// healthy probe resets a share's backoff.
func Round(ctx context.Context, cfg Config, next map[string]time.Time, backoff map[string]time.Duration) {
	for _, t := range cfg.Targets() {
		r := Probe(cfg.Stat, t.Path, cfg.Timeout)
		if cfg.Observe != nil {
			cfg.Observe(t, r)
		}
		if r.State == OK || r.State == Failed {
			delete(next, t.Key)
			delete(backoff, t.Key)
			continue
		}
		if now := cfg.Now(); now.Before(next[t.Key]) {
			continue
		}
		err := cfg.Heal(ctx, t, r)
		b := backoff[t.Key]
		switch {
		case err == nil:
			cfg.Log.Info("share remounted", "share", t.Key, "path", t.Path, "was", r.State.String(), "cause", r.Err)
			b = 0
		case b == 0:
			b = cfg.MinBackoff
		default:
			b = min(2*b, cfg.MaxBackoff)
		}
		if err != nil {
			cfg.Log.Warn("share broken; remount failed", "share", t.Key, "path", t.Path, "state", r.State.String(), "cause", r.Err, "error", err, "retry in", b)
		}
		backoff[t.Key] = b
		next[t.Key] = cfg.Now().Add(b)
	}
}
