// Package controlplane starts, for tests, the local hosted control plane (internal/dev/controlplane) with the
// pinned binaries, owned by the test. The types it takes and returns are the dev package's, aliased here so a
// test needs one import.
package controlplane

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	devcp "berth.dev/berth/internal/dev/controlplane"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/toolbin"
)

type (
	// Config is the control plane's configuration.
	Config = devcp.Config
	// ControlPlane is a running control plane.
	ControlPlane = devcp.ControlPlane
	// JoinInfo is what a node needs to join it.
	JoinInfo = devcp.JoinInfo
)

// ForTest starts a control plane owned by the test, with the pinned binaries, a temp dir (unless cfg.Dir is set)
// and a stderr logger; it is stopped at cleanup, and the components' log tails are printed if the test failed.
func ForTest(t testing.TB, cfg Config) *ControlPlane {
	t.Helper()
	cfg.BinDir = toolbin.Kubernetes.ForTest(t)
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := devcp.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, c := range devcp.Components {
				t.Logf("--- %s log (tail):\n%s", c, proc.Tail(cp.LogPath(c), 30))
			}
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return cp
}
