package mounter_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/shares/mounter"
	"berth.dev/berth/test/nspawn"
)

// Helpers the container's mount(8) runs for the made-up types berthhang and berthfail: one that never returns
// (a mount to a server that does not answer), one that fails as mount.cifs does on a wrong password.
const (
	hangHelper = "#!/bin/sh\necho started > /run/berthhang.started\nexec sleep 1000\n"
	failHelper = "#!/bin/sh\necho 'mount error(13): Permission denied' >&2\nexit 32\n"
)

// The mounter against a real systemd 252 (nspawn), over D-Bus from the host: a tmpfs mount and a read-only bind
// of it as transient mount units; both again change nothing; a second share at a taken path is refused; unmounts
// are idempotent; a helper that hangs is killed at the unit's timeout and leaves neither a process nor a unit; a
// helper that fails says why, in the error.
func TestMountUnitsInNspawn(t *testing.T) {
	nspawn.WarmRootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, mgr := nspawn.ForTest(t, ctx, nspawn.Config{Name: "berth-mounter", Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Prepare: func(root string) error {
			for name, script := range map[string]string{"mount.berthhang": hangHelper, "mount.berthfail": failHelper} {
				if err := os.WriteFile(filepath.Join(root, "sbin", name), []byte(script), 0o755); err != nil {
					return err
				}
			}
			return os.MkdirAll(filepath.Join(root, "srv", "data"), 0o755)
		}})
	sh := func(script string) string { t.Helper(); return nspawn.Run(t, ctx, m, script) }
	mt := mounter.Mounter{Units: mgr, Journal: func(ctx context.Context, unit string, lines int) string {
		out, _ := m.Sh(ctx, "journalctl --sync; journalctl -u "+unit+" -o cat --no-pager -n 8") // as JournalCtl does
		return out
	}}

	stage := mounter.Mount{What: "tmpfs", Where: "/srv/stage", Type: "tmpfs", Options: []string{"size=4m", "mode=0755"}}
	publish := mounter.Mount{What: "/srv/stage", Where: "/srv/pod", Options: []string{"bind", "ro"}}
	sh("mkdir -p /srv/stage /srv/pod")
	for round := range 2 { // the second round finds both in place
		if err := mt.Mount(ctx, stage); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := mt.Mount(ctx, publish); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if got := sh("findmnt -n -o FSTYPE /srv/stage; findmnt -n -o FSTYPE /srv/pod | sort -u; systemctl is-active srv-stage.mount srv-pod.mount"); got != "tmpfs\ntmpfs\nactive\nactive" {
		t.Errorf("mounts and units:\n%s", got)
	}
	sh("echo data > /srv/stage/f")
	if got := sh("cat /srv/pod/f; touch /srv/pod/g 2>&1 || true"); !strings.HasPrefix(got, "data\n") || !strings.Contains(got, "Read-only file system") {
		t.Errorf("the read-only bind: %q, want the stage's file, and writes refused", got)
	}
	if got := sh("findmnt -n -c -o SOURCE /srv/stage"); got != "tmpfs" {
		t.Errorf("/srv/stage is mounted %d times: %q", strings.Count(got, "\n")+1, got)
	}
	if err := mt.Mount(ctx, mounter.Mount{What: "//other/share", Where: "/srv/stage", Type: "cifs"}); err == nil || !strings.Contains(err.Error(), "mount at /srv/stage: tmpfs is mounted there, not //other/share") {
		t.Errorf("another mount at a taken path: %v", err)
	}
	for round := range 2 {
		for _, where := range []string{"/srv/pod", "/srv/stage"} {
			if err := mt.Unmount(ctx, where); err != nil {
				t.Errorf("round %d: %v", round, err)
			}
		}
	}
	if got := sh("findmnt -n /srv/pod /srv/stage || echo none"); got != "none" {
		t.Errorf("still mounted after Unmount: %s", got)
	}

	// A helper that never returns: systemd kills it at the timeout; nothing is left.
	sh("mkdir -p /srv/hang /srv/fail")
	start := time.Now()
	err := mt.Mount(ctx, mounter.Mount{What: "server:/x", Where: "/srv/hang", Type: "berthhang", Timeout: 3 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "result: timeout") {
		t.Errorf("a hanging helper: %v, want a timeout", err)
	}
	t.Logf("hanging helper failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
	// systemd signals the unit's whole control group at the timeout; the helper's process may take a moment to go
	// (on this cgroup v1 host systemd may log that it "remains running"): pidwait waits for it to exit, up to 10 s.
	left := sh("timeout 10 pidwait -f '^sleep 1000$'; pgrep -a -f '^sleep 1000$' || echo gone")
	if got := sh("cat /run/berthhang.started; systemctl list-units --all --no-legend srv-hang.mount | wc -l"); got != "started\n0" || left != "gone" {
		t.Errorf("after the timeout: helper started and units left: %q, its process: %q", got, left)
	}
	err = mt.Mount(ctx, mounter.Mount{What: "//server/share", Where: "/srv/fail", Type: "berthfail"})
	if err == nil || !strings.Contains(err.Error(), "result: exit-code") || !strings.Contains(err.Error(), "mount error(13): Permission denied") {
		t.Errorf("a failing helper: %v, want its result and its message", err)
	}
	if got := sh("systemctl list-units --all --no-legend srv-fail.mount | wc -l"); got != "0" {
		t.Errorf("a failed mount left its unit: %s", got)
	}
}
