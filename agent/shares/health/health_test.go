package health

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestProbe(t *testing.T) {
	dir := t.TempDir()
	if r := Probe(Statx, dir, time.Minute); r.State != OK {
		t.Errorf("a directory: %v %v", r.State, r.Err)
	}
	if r := Probe(Statx, filepath.Join(dir, "gone"), time.Minute); r.State != Failed || !errors.Is(r.Err, fs.ErrNotExist) {
		t.Errorf("a missing path: %v %v, want failed (not the mount's fault)", r.State, r.Err)
	}
	for _, err := range []error{unix.ESTALE, &fs.PathError{Op: "statx", Path: "/x", Err: unix.ENOTCONN}, unix.EHOSTDOWN, unix.EIO} {
		if r := Probe(func(string) error { return err }, "/x", time.Minute); r.State != Dead {
			t.Errorf("%v: %v, want dead", err, r.State)
		}
	}
	// A stat that never returns: the probe gives up at its deadline and does not wait for it.
	release := make(chan struct{})
	defer close(release)
	r := Probe(func(string) error { <-release; return nil }, "/x", 50*time.Millisecond)
	if r.State != Hung {
		t.Errorf("a hung stat: %v", r.State)
	}
}

// A broken share is healed at once, then, while healing fails, no sooner than its backoff (doubling up to the
// maximum); a heal that works resets it; a share that answers is left alone.
func TestRoundHealsWithBackoff(t *testing.T) {
	now := time.Unix(1000, 0)
	broken := map[string]bool{"/a": true}
	healOK := false
	var heals []string
	cfg := Config{Timeout: time.Second, MinBackoff: 2 * time.Second, MaxBackoff: 5 * time.Second, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return now },
		Stat: func(p string) error {
			if broken[p] {
				return unix.ESTALE
			}
			return nil
		},
		Targets: func() []Target { return []Target{{"a", "/a"}, {"b", "/b"}} },
		Heal: func(_ context.Context, tg Target, r Result) error {
			heals = append(heals, tg.Key+"@"+now.Sub(time.Unix(1000, 0)).String())
			if healOK {
				broken[tg.Path] = false
				return nil
			}
			return errors.New("server down")
		},
	}
	next, backoff := map[string]time.Time{}, map[string]time.Duration{}
	for _, step := range []time.Duration{0, time.Second, time.Second, time.Second, 4 * time.Second, 5 * time.Second} {
		now = now.Add(step)
		Round(context.Background(), cfg, next, backoff)
	}
	// At 0 (then backoff 2s), 2s (4s), 7s (5s: the maximum), 12s (5s); not at 1s, nor at 3s (before 6s).
	want := []string{"a@0s", "a@2s", "a@7s", "a@12s"}
	if len(heals) != len(want) {
		t.Fatalf("heals %v, want %v", heals, want)
	}
	for i := range want {
		if heals[i] != want[i] {
			t.Errorf("heals %v, want %v", heals, want)
		}
	}
	healOK = true
	now = now.Add(5 * time.Second)
	Round(context.Background(), cfg, next, backoff)
	if broken["/a"] || backoff["a"] != 0 {
		t.Errorf("after a heal that works: broken %v, backoff %v", broken["/a"], backoff["a"])
	}
	Round(context.Background(), cfg, next, backoff)
	if len(heals) != 5 {
		t.Errorf("heals %v: want one more (the one that worked), then none for a healthy share", heals)
	}
	if _, ok := backoff["b"]; ok {
		t.Error("a share that answers got a backoff")
	}
}

// A share whose mount point is no longer a mount (lost, or detached by a heal whose remount failed) probes dead
// without a stat; a mounted one is stat'ed.
func TestMountedProbe(t *testing.T) {
	stats := 0
	stat := func(string) error { stats++; return nil }
	mounted := map[string]bool{"/s/a": true}
	probe := Mounted(func(p string) (bool, error) { return mounted[p], nil }, stat)
	if r := Probe(probe, "/s/b", time.Second); r.State != Dead || !errors.Is(r.Err, unix.ENOTCONN) || stats != 0 {
		t.Errorf("a mount point without its mount: %+v, %d stats", r, stats)
	}
	if r := Probe(probe, "/s/a", time.Second); r.State != OK || stats != 1 {
		t.Errorf("a mounted share: %+v, %d stats", r, stats)
	}
}
