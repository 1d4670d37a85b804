package nspawn

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"berth.dev/berth/agent/systemdbus"
)

// ForTest boots a container for the test (skipping when this machine cannot: not root, or no systemd-nspawn) and
// connects to its systemd over D-Bus. The container is stopped at cleanup, its console printed if the test failed.
func ForTest(t *testing.T, ctx context.Context, cfg Config) (*Machine, *systemdbus.Manager) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root for systemd-nspawn")
	}
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		t.Skip("systemd-nspawn is not installed (apt package systemd-container)")
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	m, err := Boot(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(m.Log())
			t.Logf("console:\n%s", data)
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
