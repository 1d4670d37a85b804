package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/test/wait"
)

// recorder is the fake side of Run: Load merges the real drop-ins of dir, Apply and Notify are recorded.
type recorder struct {
	mu  sync.Mutex
	dir string
	// debounce is the daemon's (default 50 ms; a test that needs a burst to be one change gives it the product's
	// default, 1 s, so that a busy machine's gaps between writes stay inside it).
	debounce time.Duration
	applied  []string // maxPods of each applied config
	follow   []string // maxPods of each config Applied was called with
	notes    []string
	loads    int // Load calls: one per handled batch of changes, applied or not
	joined   bool
	fail     error
	block    chan struct{}          // Apply waits on it when set
	panics   func(applied int) bool // Apply panics when it returns true
}

func (r *recorder) load() (*nodeconfig.Config, error) {
	srcs, err := config.DropIns(r.dir)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	joined := r.joined
	r.loads++
	r.mu.Unlock()
	merge := config.Merge
	if joined {
		merge = config.MergeJoined
	}
	c, err := merge(srcs)
	if err != nil {
		return nil, err
	}
	return config.Internal(c, nodeconfig.Defaults{Hostname: "node-1"})
}

func (r *recorder) apply(ctx context.Context, c *nodeconfig.Config) error {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return r.fail
	}
	if r.panics != nil && r.panics(len(r.applied)) {
		var m map[string]int
		m["nil map"]++ // a real runtime panic: assignment to a nil map
	}
	r.applied = append(r.applied, string(c.Kubelet.Config))
	r.joined = true
	return nil
}

func (r *recorder) onApplied(c *nodeconfig.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.follow = append(r.follow, string(c.Kubelet.Config))
}

func (r *recorder) followed() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.follow...)
}

func (r *recorder) notify(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, s)
	return nil
}

func (r *recorder) snapshot() (applied, notes []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.applied...), append([]string(nil), r.notes...)
}

func (r *recorder) loaded() int { r.mu.Lock(); defer r.mu.Unlock(); return r.loads }

func (r *recorder) isJoined() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.joined }

const base = `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://127.0.0.1:6443
    discovery:
      token: abcdef.0123456789abcdef
      caCertHashes: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
`

func maxPods(n string) string {
	return "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      maxPods: " + n + "\n"
}

func start(t *testing.T, r *recorder, watchdog time.Duration) (chan error, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	debounce := r.debounce
	if debounce == 0 {
		debounce = 50 * time.Millisecond
	}
	go func() {
		defer close(finished)
		done <- Run(ctx, Config{DropInDir: r.dir, Load: r.load, Apply: r.apply, Joined: r.isJoined, Applied: r.onApplied, Notify: r.notify,
			Watchdog: watchdog, ApplyTimeout: 300 * time.Millisecond, Debounce: debounce,
			Log: slog.New(slog.DiscardHandler)})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return done, cancel
}

func write(t *testing.T, dir, name, data string) {
	t.Helper()
	// The way an editor or config management saves: a temp file renamed into place.
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// With no NodeConfig the daemon is READY and waiting; the first drop-in is applied.
func TestWaitsForFirstDropIn(t *testing.T) {
	r := &recorder{dir: filepath.Join(t.TempDir(), "config.d")}
	start(t, r, 0)
	wait.For(t, 5*time.Second, "READY while waiting", func() bool {
		_, notes := r.snapshot()
		return len(notes) > 0 && strings.HasPrefix(notes[0], "READY=1\nSTATUS=waiting for a NodeConfig")
	})
	if st, err := os.Stat(r.dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("drop-in dir not created 0700: %v %v", st, err)
	}
	write(t, r.dir, "10-user-data.yaml", base)
	wait.For(t, 5*time.Second, "the first drop-in applied", func() bool { a, _ := r.snapshot(); return len(a) == 1 })
}

// A burst of writes is one re-apply of the merged result; swap files and other names are ignored; a bad drop-in
// on a joined node is reported and does not stop the daemon; fixing it applies again.
func TestReappliesChanges(t *testing.T) {
	r := &recorder{dir: t.TempDir(), debounce: time.Second}
	write(t, r.dir, "10-user-data.yaml", base)
	done, _ := start(t, r, 0)
	wait.For(t, 5*time.Second, "the start apply", func() bool { a, _ := r.snapshot(); return len(a) == 1 })

	write(t, r.dir, "20-pods.yaml", maxPods("50"))
	write(t, r.dir, "20-pods.yaml", maxPods("60"))
	write(t, r.dir, "30-more.yaml", maxPods("70"))
	os.WriteFile(filepath.Join(r.dir, ".20-pods.yaml.swp"), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(r.dir, "README"), []byte("junk"), 0o600)
	wait.For(t, 5*time.Second, "one re-apply", func() bool { a, _ := r.snapshot(); return len(a) >= 2 })

	write(t, r.dir, "40-bad.yaml", "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    confg: {}\n")
	wait.For(t, 5*time.Second, "the failure in STATUS", func() bool {
		_, notes := r.snapshot()
		return strings.Contains(notes[len(notes)-1], "STATUS=re-apply failed:") && strings.Contains(notes[len(notes)-1], "confg")
	})
	// The loop handles changes in order, so the burst before the bad drop-in has been handled in full: one re-apply.
	applied, notes := r.snapshot()
	if len(applied) != 2 || applied[1] != `{"maxPods":70}` {
		t.Fatalf("applied = %q, want the start config then one re-apply with maxPods 70", applied)
	}
	if !strings.Contains(strings.Join(notes, "|"), "STATUS=applying NodeConfig (changed: 20-pods.yaml, 30-more.yaml)") {
		t.Errorf("notes lack the changed files: %q", notes)
	}
	// What runs beside the daemon heard of every successful apply, with the config that was applied.
	if f := r.followed(); !slices.Equal(f, applied) {
		t.Errorf("Applied saw %q, want %q", f, applied)
	}
	select {
	case err := <-done:
		t.Fatalf("Run ended on a bad drop-in of a joined node: %v", err)
	default:
	}
	// Removing the bad drop-in brings back the config applied last, and the agent's scrub of the token out of the
	// drop-in after the join leaves the same config: each is handled (loaded) and applies nothing.
	loads := r.loaded()
	os.Remove(filepath.Join(r.dir, "40-bad.yaml"))
	wait.For(t, 5*time.Second, "the removal handled", func() bool { return r.loaded() == loads+1 })
	write(t, r.dir, "10-user-data.yaml", strings.Replace(base, "      token: abcdef.0123456789abcdef\n", "", 1))
	wait.For(t, 5*time.Second, "the scrub handled", func() bool { return r.loaded() == loads+2 })
	if a, _ := r.snapshot(); len(a) != 2 {
		t.Fatalf("applied %d times; a removed bad drop-in or a scrubbed token must not re-apply: %q", len(a), a)
	}
	write(t, r.dir, "30-more.yaml", maxPods("80"))
	wait.For(t, 5*time.Second, "a re-apply of a real change", func() bool { a, _ := r.snapshot(); return len(a) == 3 })
	if f := r.followed(); len(f) != 3 || f[2] != `{"maxPods":80}` {
		t.Errorf("Applied saw %q, want the failed re-apply left out and the last one with maxPods 80", f)
	}
}

// Before the join, a failed apply ends Run with its error (systemd shows the exit code and restarts the unit).
func TestApplyFailureBeforeJoinEnds(t *testing.T) {
	r := &recorder{dir: t.TempDir(), fail: errors.New("discover: boom")}
	write(t, r.dir, "10-user-data.yaml", base)
	done, _ := start(t, r, 0)
	select {
	case err := <-done:
		if err == nil || err.Error() != "discover: boom" {
			t.Fatalf("Run = %v, want the apply's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end")
	}

	r2 := &recorder{dir: t.TempDir()}
	write(t, r2.dir, "10-user-data.yaml", "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec: {}\n")
	done, _ = start(t, r2, 0)
	select {
	case err := <-done:
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "spec.controlPlane.endpoint") {
			t.Fatalf("Run = %v, want a ConfigError naming the field", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end")
	}
}

// A panic in an apply, first or after the join, is recovered and ends Run with a PanicError that carries the
// stack: the command maps it to exit 1, which systemd restarts, never to the invalid-configuration code it does not.
func TestPanicInApplyEndsRunWithItsStack(t *testing.T) {
	for name, panics := range map[string]func(int) bool{
		"first apply": func(int) bool { return true },
		"re-apply":    func(applied int) bool { return applied > 0 },
	} {
		r := &recorder{dir: t.TempDir(), panics: panics}
		write(t, r.dir, "10-user-data.yaml", base)
		done, _ := start(t, r, 0)
		if name == "re-apply" {
			wait.For(t, 5*time.Second, "the join", func() bool { a, _ := r.snapshot(); return len(a) == 1 })
			write(t, r.dir, "20-more.yaml", maxPods("70"))
		}
		select {
		case err := <-done:
			var pe *PanicError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), "assignment to entry in nil map") ||
				!strings.Contains(string(pe.Stack), "daemon.(*recorder).apply") {
				t.Errorf("%s: Run = %v, want a PanicError with the recorder's frame in its stack", name, err)
			}
			var ce *ConfigError
			if errors.As(err, &ce) {
				t.Errorf("%s: a panic reported as a config error", name)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Run did not end", name)
		}
	}
}

// The watchdog is fed while the loop is idle, and while an apply runs within ApplyTimeout; an apply stuck past it
// starves the watchdog, so systemd kills and restarts the agent.
func TestWatchdog(t *testing.T) {
	r := &recorder{dir: t.TempDir()}
	start(t, r, 40*time.Millisecond)
	count := func() int {
		_, notes := r.snapshot()
		n := 0
		for _, s := range notes {
			if s == "WATCHDOG=1" {
				n++
			}
		}
		return n
	}
	wait.For(t, 5*time.Second, "watchdog pings while idle", func() bool { return count() >= 5 })

	r.mu.Lock()
	r.block = make(chan struct{})
	r.mu.Unlock()
	write(t, r.dir, "10-user-data.yaml", base)
	wait.For(t, 5*time.Second, "the apply to start", func() bool {
		_, notes := r.snapshot()
		return strings.HasPrefix(notes[len(notes)-1], "STATUS=applying") || strings.Contains(strings.Join(notes, "|"), "STATUS=applying")
	})
	// The one window here is a span of time by nature: the watchdog starves only once the apply is older than
	// ApplyTimeout (300 ms), and starving is the absence of pings over a span. 400 ms is past the timeout; 200 ms is
	// ten watchdog ticks (20 ms), in which a fed watchdog pings ten times.
	time.Sleep(400 * time.Millisecond)
	before := count()
	time.Sleep(200 * time.Millisecond)
	if after := count(); after != before {
		t.Errorf("watchdog fed %d times while an apply was stuck past its timeout", after-before)
	}
	close(r.block)
	wait.For(t, 5*time.Second, "pings again after the apply", func() bool { return count() > before+2 })
}
