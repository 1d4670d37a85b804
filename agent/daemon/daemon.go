// Package daemon keeps a node configured after its join: `berth-agent run`. It applies the NodeConfig once at
// start, then watches the drop-in directory with fsnotify and re-applies the merged config whenever a drop-in is
// written, renamed or removed (debounced, so an editor's save-and-rename is one change). Applying is the join
// itself, which on a joined node skips discovery and restarts only what a changed file affects.
//
// Until the node has joined, a failed apply ends Run with the apply's error, so systemd shows the exit code and
// Restart= retries the (idempotent) join. Once joined, a bad drop-in or a failed re-apply is logged and shown in
// the unit's STATUS=, and the running node is left as it is.
//
// With no NodeConfig at all, Run reports READY and waits for the first drop-in. The watchdog (WATCHDOG=1) is
// sent only while the loop is healthy: idle and responsive, or inside an apply that has not outlived its deadline.
package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/bootstraptoken"
)

// Config is what Run needs.
type Config struct {
	// DropInDir is watched; it is created (0700: drop-ins may hold a token) if missing.
	DropInDir string
	// Load reads and merges every source; config.ErrNoConfig means there is none yet.
	Load func() (*nodeconfig.Config, error)
	// Apply joins or re-applies; it must return within ApplyTimeout.
	Apply func(ctx context.Context, c *nodeconfig.Config) error
	// Joined reports whether the node has joined (the kubelet's kubeconfig exists).
	Joined func() bool
	// Applied (optional) is called on the daemon's goroutine after every successful apply, with the config now in
	// force on the joined node: what runs beside the daemon (the route controller) follows it from here.
	Applied func(c *nodeconfig.Config)
	// Notify is sd_notify (nil: not under systemd).
	Notify func(state string) error
	// Watchdog is systemd's WatchdogSec (0: no watchdog); pings go out at half of it.
	Watchdog time.Duration
	// ApplyTimeout bounds one apply for the watchdog's health check (default 20 minutes).
	ApplyTimeout time.Duration
	// Debounce is the quiet time after the last event before re-applying (default 1 s).
	Debounce time.Duration
	Log      *slog.Logger
}

// health is what the watchdog looks at: the loop's last heartbeat, and the start of an apply in progress.
type health struct {
	beat     atomic.Int64 // unix nanos
	applying atomic.Int64 // unix nanos; 0 when idle
}

func (h *health) ok(now time.Time, stale, applyTimeout time.Duration) bool {
	if a := h.applying.Load(); a != 0 {
		return now.Sub(time.Unix(0, a)) < applyTimeout
	}
	return now.Sub(time.Unix(0, h.beat.Load())) < stale
}

// Run applies the config, then watches for changes until ctx ends (nil error) or an apply before the join fails.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = time.Second
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 20 * time.Minute
	}
	notify := func(state string) {
		if cfg.Notify != nil {
			if err := cfg.Notify(state); err != nil {
				cfg.Log.Warn("sd_notify", "err", err)
			}
		}
	}
	if err := os.MkdirAll(cfg.DropInDir, 0o700); err != nil {
		return fmt.Errorf("drop-in dir: %w", err)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", cfg.DropInDir, err)
	}
	defer w.Close()
	// Watch before the first load, so a drop-in written in between is not missed.
	if err := w.Add(cfg.DropInDir); err != nil {
		return fmt.Errorf("watch %s: %w", cfg.DropInDir, err)
	}

	h := &health{}
	h.beat.Store(time.Now().UnixNano())
	tick := time.Hour
	if cfg.Watchdog > 0 {
		tick = cfg.Watchdog / 2
		go watchdog(ctx, h, tick, cfg.Watchdog, cfg.ApplyTimeout, notify)
	}

	var last string // fingerprint of the last applied config
	apply := func(reason string) error {
		c, err := cfg.Load()
		if errors.Is(err, config.ErrNoConfig) {
			cfg.Log.Info("no NodeConfig yet; waiting for a drop-in", "dir", cfg.DropInDir)
			notify("READY=1\nSTATUS=waiting for a NodeConfig in " + cfg.DropInDir)
			return nil
		}
		if err != nil {
			return &ConfigError{Err: err}
		}
		fp := fingerprint(c)
		if fp == last && reason != "start" {
			// The agent's own token scrub, or a save that changed nothing the node uses.
			cfg.Log.Info("drop-ins changed but the NodeConfig did not; nothing to apply", "reason", reason)
			return nil
		}
		cfg.Log.Info("applying NodeConfig", "reason", reason)
		notify("STATUS=applying NodeConfig (" + reason + ")")
		h.applying.Store(time.Now().UnixNano())
		defer h.applying.Store(0)
		if err := safeApply(ctx, cfg.Apply, c); err != nil {
			return err
		}
		last = fp
		if cfg.Applied != nil {
			cfg.Applied(c)
		}
		return nil
	}

	if err := apply("start"); err != nil {
		return err
	}
	var debounce <-chan time.Time
	var changed []string
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		h.beat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			notify("STOPPING=1")
			return nil
		case <-ticker.C:
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watcher closed")
			}
			if relevant(ev) {
				changed = append(changed, filepath.Base(ev.Name))
				debounce = time.After(cfg.Debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watcher closed")
			}
			// An overflow loses events: re-apply, which re-reads everything.
			cfg.Log.Warn("watch", "err", err)
			changed = append(changed, "(watch error)")
			debounce = time.After(cfg.Debounce)
		case <-debounce:
			debounce = nil
			reason := "changed: " + strings.Join(dedupe(changed), ", ")
			changed = nil
			joined := cfg.Joined()
			if err := apply(reason); err != nil {
				var pe *PanicError
				if !joined || errors.As(err, &pe) {
					// A panic leaves the process in a state nobody planned: exit and let systemd start afresh.
					return err
				}
				cfg.Log.Error("re-apply failed; the node keeps its current configuration", "err", err)
				notify("STATUS=re-apply failed: " + firstLine(err.Error()))
			}
		}
	}
}

// fingerprint identifies what a config asks of the node: the token is left out, because the agent removes it from
// the drop-ins after the join.
func fingerprint(c *nodeconfig.Config) string {
	cc := *c
	cc.ControlPlane.Discovery.Token = bootstraptoken.Token{}
	data, err := json.Marshal(cc)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// ConfigError is a NodeConfig that did not decode, merge or validate.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }

// PanicError is a panic recovered in an apply, with the goroutine's stack at the panic.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic in apply: %v", e.Value) }

// safeApply runs apply, turning a panic into a PanicError.
func safeApply(ctx context.Context, apply func(context.Context, *nodeconfig.Config) error, c *nodeconfig.Config) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: debug.Stack()}
		}
	}()
	return apply(ctx, c)
}
func (e *ConfigError) Unwrap() error { return e.Err }

func watchdog(ctx context.Context, h *health, every, stale, applyTimeout time.Duration, notify func(string)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if h.ok(now, stale, applyTimeout) {
				notify("WATCHDOG=1")
			}
		}
	}
}

// relevant is a drop-in's change: the files config.DropIns reads, not editor swap files or chmods.
func relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	base := filepath.Base(ev.Name)
	if strings.HasPrefix(base, ".") {
		return false
	}
	switch filepath.Ext(base) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
