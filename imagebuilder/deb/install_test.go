package deb_test

import (
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

// The agent's package through its whole life under a real systemd 252 (systemd-nspawn, the node image's rootfs),
// installed with dpkg as a user would on a running machine: install enables and starts the agent, which waits for
// a NodeConfig; an upgrade restarts it; an administrator's disable survives an upgrade; removal stops it and takes
// its files and units; a purge forgets the enablement; and installing again brings it all back.
func TestAgentPackageLifecycleInNspawn(t *testing.T) {
	tier.Require(t, tier.Root, tier.Nspawn)
	nspawn.WarmRootfs(t) // a first build of the rootfs is not part of this test's deadline
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	agent := toolbin.Agent(t)
	m, mgr := nspawn.ForTest(t, ctx, nspawn.Config{Name: "berth-deb", Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	const u = "berth-agent.service"
	install := func(version string) {
		t.Helper()
		pkg, err := payload.AgentPackage(agent, version)
		if err != nil {
			t.Fatal(err)
		}
		path, err := deb.WriteFile(filepath.Join(m.Root, "var/tmp"), pkg) // nspawn mounts a tmpfs on /tmp
		if err != nil {
			t.Fatal(err)
		}
		if out, err := m.Sh(ctx, "dpkg -i /var/tmp/"+filepath.Base(path)); err != nil {
			status, _ := m.Sh(ctx, "systemctl status --no-pager berth-agent; journalctl --no-pager -u berth-agent | tail -n 20")
			t.Fatalf("%v\n%s", err, status)
		} else {
			t.Logf("dpkg -i %s:\n%s", filepath.Base(path), out)
		}
		if got := sh(t, ctx, m, "dpkg-query -W -f='${Status} ${Version}' berth-agent"); got != "install ok installed "+version {
			t.Fatalf("after installing %s dpkg says %q", version, got)
		}
	}
	state := func() systemdbus.State {
		t.Helper()
		s, err := mgr.State(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waiting := func(when string) systemdbus.State {
		t.Helper()
		var s systemdbus.State
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if s = state(); s.Active == "active" && strings.HasPrefix(s.StatusText, "waiting for a NodeConfig") {
				return s
			}
		}
		t.Fatalf("%s: the agent is not waiting for a NodeConfig: %+v", when, s)
		return s
	}
	enabled := func() string {
		out, _ := m.Sh(ctx, "systemctl is-enabled "+u)
		return strings.TrimSpace(out)
	}

	install("0.1.0~dev")
	first := waiting("after install")
	if e := enabled(); e != "enabled" {
		t.Errorf("after install %s is %q", u, e)
	}

	install("0.1.0")
	if s := waiting("after upgrade"); s.MainPID == first.MainPID || s.ActiveEnter == first.ActiveEnter {
		t.Errorf("upgrade did not restart the agent: pid %d then %d", first.MainPID, s.MainPID)
	}

	sh(t, ctx, m, "systemctl disable --now "+u)
	install("0.2.0")
	if e, s := enabled(), state(); e != "disabled" || s.Active != "inactive" {
		t.Errorf("after a disable and an upgrade: %s, %s; want disabled and inactive", e, s.Active)
	}
	sh(t, ctx, m, "systemctl enable --now "+u)
	waiting("enabled again")

	sh(t, ctx, m, "dpkg -r berth-agent")
	if got := sh(t, ctx, m, "systemctl show -p LoadState --value "+u); got != "not-found" {
		t.Errorf("after removal %s has LoadState %q", u, got)
	}
	if s := state(); s.Active != "inactive" {
		t.Errorf("after removal the agent is %s", s.Active)
	}
	for _, p := range []string{layout.AgentBinary, layout.UnitDir + "/kubelet.service"} {
		if _, err := os.Lstat(filepath.Join(m.Root, p)); !os.IsNotExist(err) {
			t.Errorf("after removal %s is still there (%v)", p, err)
		}
	}

	sh(t, ctx, m, "dpkg -P berth-agent")
	if _, err := os.Lstat(filepath.Join(m.Root, "etc/systemd/system/multi-user.target.wants", u)); !os.IsNotExist(err) {
		t.Errorf("after purge the enable link is still there (%v)", err)
	}

	install("0.2.0")
	waiting("installed again after a purge")
	if e := enabled(); e != "enabled" {
		t.Errorf("installed again: %s is %q", u, e)
	}
}

func sh(t *testing.T, ctx context.Context, m *nspawn.Machine, script string) string {
	t.Helper()
	out, err := m.Sh(ctx, script)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
