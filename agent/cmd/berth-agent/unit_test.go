package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/systemdbus"
	"berth.dev/berth/imagebuilder/deb"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/nspawn"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
)

// The systemd tier for the agent binary itself: berth-agent.service as the image installs it (its package, enabled), run by a
// real systemd 252 under systemd-nspawn. With no NodeConfig the agent reports READY (Type=notify) and a STATUS
// saying what it waits for; it feeds a short watchdog without being restarted; a drop-in written later is picked
// up by its fsnotify watch, and an invalid one before the join ends the unit with exit 78 (EX_CONFIG), which the
// unit does not restart (waiting cannot fix a config). A crash (SIGQUIT: the Go runtime dumps its goroutines and
// exits 2, as on a fatal error) is restarted like any failure.
func TestAgentUnitInNspawn(t *testing.T) {
	tier.Require(t, tier.Root, tier.Nspawn)
	nspawn.WarmRootfs(t) // a first build of the rootfs is not part of this test's deadline
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	agent := toolbin.Agent(t)
	pkg, err := payload.AgentPackage(agent, payload.DebVersion())
	if err != nil {
		t.Fatal(err)
	}
	m, mgr := nspawn.ForTest(t, ctx, nspawn.Config{Name: "berth-agent-unit", Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Prepare: func(root string) error {
			// Installed (and enabled) the way the image builder installs it: its package, with the tree's dpkg.
			if err := deb.InstallInto(ctx, root, pkg); err != nil {
				return err
			}
			for _, f := range []struct {
				path string
				data []byte
			}{
				// Short watchdog and restart delay, so the test sees a missed ping or a restart quickly.
				{"/etc/systemd/system/berth-agent.service.d/50-test.conf", []byte("[Service]\nWatchdogSec=3s\nRestartSec=1s\n")},
				{layout.ProfileFile, []byte("debian-12\n")},
			} {
				if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f.path)), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(root, f.path), f.data, 0o644); err != nil {
					return err
				}
			}
			return nil
		}})
	const u = "berth-agent.service"
	waitFor := func(what string, ok func(systemdbus.State) bool) systemdbus.State {
		t.Helper()
		var s systemdbus.State
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if s, err = mgr.State(ctx, u); err == nil && ok(s) {
				return s
			}
		}
		t.Fatalf("%s: %s never reached it; last state %+v (err %v)", what, u, s, err)
		return s
	}

	// Boot reached "running" (nspawn.Boot waits for it), so the Type=notify start job finished: READY was sent.
	s := waitFor("ready and waiting", func(s systemdbus.State) bool { return s.Active == "active" })
	if s.StatusText != "waiting for a NodeConfig in /etc/berth/config.d" {
		t.Errorf("StatusText = %q", s.StatusText)
	}
	if st, err := os.Stat(filepath.Join(m.Root, "etc/berth/config.d")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("/etc/berth/config.d: %v %v, want a 0700 dir made by the agent", st, err)
	}
	// Three watchdog periods: a missed ping would have killed and restarted it (another pid).
	time.Sleep(9 * time.Second)
	if s2, err := mgr.State(ctx, u); err != nil || s2.Active != "active" || s2.MainPID != s.MainPID {
		t.Fatalf("after 3 watchdog periods: %+v (err %v), want the same pid %d active", s2, err, s.MainPID)
	}

	// A crash: systemd restarts the agent (another pid, active again), since exit 2 is not a config error.
	if out, err := m.Sh(ctx, "systemctl kill --signal=SIGQUIT --kill-whom=main "+u); err != nil {
		t.Fatalf("systemctl kill: %v\n%s", err, out)
	}
	crashed := s.MainPID
	s = waitFor("restarted after a crash", func(s systemdbus.State) bool { return s.Active == "active" && s.MainPID != 0 && s.MainPID != crashed })
	if out, err := m.Sh(ctx, "journalctl -u "+u+" -o cat | grep -c '^SIGQUIT: quit'"); err != nil || strings.TrimSpace(out) == "0" {
		t.Errorf("the journal does not show the crash's goroutine dump (%v): %s", err, out)
	}

	// `systemctl stop` during the first join (discovery retrying a closed port on loopback) is a clean stop: exit
	// 0, the unit inactive, not failed.
	dropIn := filepath.Join(m.Root, "etc/berth/config.d/10-user-data.yaml")
	unreachable := "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  controlPlane:\n    endpoint: https://127.0.0.1:1\n" +
		"    discovery:\n      token: abcdef.0123456789abcdef\n      caCertHashes: [\"sha256:" + strings.Repeat("0", 64) + "\"]\n"
	if err := os.WriteFile(dropIn, []byte(unreachable), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("joining", func(s systemdbus.State) bool { return strings.HasPrefix(s.StatusText, "applying NodeConfig") })
	if out, err := m.Sh(ctx, "systemctl stop "+u); err != nil {
		t.Fatalf("systemctl stop: %v\n%s", err, out)
	}
	s = waitFor("stopped", func(s systemdbus.State) bool { return s.Active == "inactive" || s.Active == "failed" })
	if s.Active != "inactive" || s.Result != "success" || s.ExecMainStatus != 0 {
		t.Errorf("stop during the join: %s, result %s, exit %d; want inactive, success, 0", s.Active, s.Result, s.ExecMainStatus)
	}

	// A drop-in without a control plane: the config is refused before anything is touched, and the unit ends
	// with exit 78 and stays down.
	statusFile := filepath.Join(m.Root, "var/lib/berth/status.json")
	before, _ := os.ReadFile(statusFile) // the stopped join's
	bad := "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      maxPods: 10\n"
	if err := os.WriteFile(dropIn, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = mgr.Start(ctx, u) // the start job fails: the agent exits at once
	s = waitFor("failed on a bad config", func(s systemdbus.State) bool { return s.Active == "failed" })
	if s.ExecMainStatus != exitInvalidConfig || s.Result != "exit-code" {
		t.Errorf("exit status %d, result %q; want %d, exit-code", s.ExecMainStatus, s.Result, exitInvalidConfig)
	}
	time.Sleep(3 * time.Second) // RestartSec=1s: a restart would have happened by now
	if s2, _ := mgr.State(ctx, u); s2.Active != "failed" || s2.ActiveEnter != s.ActiveEnter {
		t.Errorf("the unit was restarted after exit %d: %+v", exitInvalidConfig, s2)
	}
	if after, _ := os.ReadFile(statusFile); !bytes.Equal(after, before) {
		t.Errorf("a refused config changed the status file:\n%s", after)
	}
}
