package nspawn

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/systemdbus"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/tier"
)

// WarmRootfs builds the cached rootfs, if this machine has none yet, under a deadline of its own: a first build
// downloads and installs a Debian system (minutes, more on a loaded machine), a one-time cost a test's own
// deadline for booting and checking its container must not include. Call it before starting that deadline.
func WarmRootfs(t *testing.T) {
	t.Helper()
	tier.Require(t, tier.Root, tier.Nspawn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if _, err := Rootfs(ctx, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		t.Fatal(err)
	}
}

// ForTest boots a container for the test (skipping when this machine cannot: not root, or no systemd-nspawn) and
// connects to its systemd over D-Bus. The container is stopped at cleanup, its console printed if the test failed.
func ForTest(t *testing.T, ctx context.Context, cfg Config) (*Machine, *systemdbus.Manager) {
	t.Helper()
	tier.Require(t, tier.Root, tier.Nspawn)
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	m, err := Boot(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			// The tail only: the failures above it must stay readable in a CI log that cuts long output.
			t.Logf("console (last 40 lines of %s):\n%s", m.Log(), proc.Tail(m.Log(), 40))
		}
		if err := m.Stop(); err != nil {
			t.Errorf("stop container: %v", err)
		}
	})
	mgr, err := systemdbus.ConnectSocket(ctx, m.Bus)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mgr.Close)
	return m, mgr
}

// Run runs script in the container (Sh) and returns its output trimmed, failing the test on an error.
func Run(t testing.TB, ctx context.Context, m *Machine, script string) string {
	t.Helper()
	out, err := m.Sh(ctx, script)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
