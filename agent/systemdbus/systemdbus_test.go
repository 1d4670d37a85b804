package systemdbus_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/render"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/systemd"
	"berth.dev/berth/test/nspawn"
)

// fakeDaemon stands in for a binary that cannot run in the container (containerd, kubelet need cgroups): it
// records its arguments and start count where the host can read them (the container's /run is its own tmpfs),
// notifies readiness when asked, then sleeps like a daemon.
const fakeDaemon = `#!/bin/sh
name=$(basename "$0")
mkdir -p /var/lib/fake
echo "$*" > /var/lib/fake/$name.args
echo start >> /var/lib/fake/$name.starts
[ -n "$NOTIFY_SOCKET" ] && systemd-notify --ready
exec sleep infinity
`

// The systemd tier: berth's units and the agent's rendered drop-ins in a real systemd 252, driven over D-Bus
// from the host. Starting the kubelet pulls in containerd first (Requires + After), the drop-in's arguments
// reach ExecStart intact, daemon-reload picks up a changed drop-in, a start of an active unit changes nothing,
// a restart does, and a failing unit's error says what state it is in.
func TestUnitsOverDBusInNspawn(t *testing.T) {
	nspawn.WarmRootfs(t) // a first build of the rootfs is not part of this test's deadline
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	p, _ := distro.Get("debian-12")
	tok, _ := bootstraptoken.Generate()
	nc, err := config.Internal(&v1alpha1.NodeConfig{Spec: v1alpha1.NodeConfigSpec{
		Node:    v1alpha1.Node{Labels: map[string]string{"pool": "a"}},
		Kubelet: v1alpha1.Kubelet{ExtraArgs: map[string]string{"v": "2", "eviction-soft": "memory.available<10%"}},
	}}, nodeconfig.Defaults{Hostname: "ns-node"})
	if err != nil {
		t.Fatal(err)
	}
	in := render.Input{
		Config:  *nc,
		Profile: p, Endpoint: "https://192.0.2.1:6443", CA: []byte("ca"), Token: tok,
		Paths: layout.Default(),
	}
	out, err := render.Node(in)
	if err != nil {
		t.Fatal(err)
	}
	install := func(root string, files []render.File) error {
		for _, f := range files {
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(f.Path)), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(root, f.Path), f.Data, f.Mode); err != nil {
				return err
			}
		}
		return nil
	}
	m, mgr := nspawn.ForTest(t, ctx, nspawn.Config{Name: "berth-systemd-tier", Log: log,
		Prepare: func(root string) error {
			files := out.Files
			for _, u := range systemd.Units() {
				data, _ := systemd.Unit(u)
				files = append(files, render.File{Path: "/etc/systemd/system/" + u, Mode: 0o644, Data: data})
			}
			files = append(files,
				render.File{Path: "/usr/local/bin/kubelet", Mode: 0o755, Data: []byte(fakeDaemon)},
				render.File{Path: "/usr/local/bin/kube-proxy", Mode: 0o755, Data: []byte(fakeDaemon)},
				render.File{Path: "/usr/local/bin/containerd", Mode: 0o755, Data: []byte(fakeDaemon)},
				render.File{Path: "/etc/systemd/system/failing.service", Mode: 0o644,
					Data: []byte("[Service]\nType=oneshot\nExecStart=/bin/false\n")})
			// Debian's containerd unit runs /usr/bin/containerd; the static one (systemd/runtime) the same
			// binary name under /usr/local/bin. Replace the packaged one with the fake.
			if err := os.Remove(filepath.Join(root, "etc/systemd/system/containerd.service")); err != nil && !os.IsNotExist(err) {
				return err
			}
			// containerd is Type=notify: the start job waits for READY=1, which the fake sends from a child.
			files = append(files, render.File{Path: "/usr/bin/containerd", Mode: 0o755, Data: []byte(fakeDaemon)},
				render.File{Path: "/etc/systemd/system/containerd.service.d/50-test-notify.conf", Mode: 0o644,
					Data: []byte("[Service]\nNotifyAccess=all\n")})
			return install(root, files)
		}})
	read := func(p string) string {
		data, _ := os.ReadFile(filepath.Join(m.Root, p))
		return strings.TrimSpace(string(data))
	}
	// A Type=simple job is done once the process is forked, before the fake has written its files.
	readWhen := func(p string, ok func(string) bool) string {
		for range 100 {
			if v := read(p); ok(v) {
				return v
			}
			time.Sleep(50 * time.Millisecond)
		}
		return read(p)
	}

	if err := mgr.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mgr.Start(ctx, layout.KubeletUnit); err != nil {
		t.Fatal(err)
	}
	kubelet, err := mgr.State(ctx, layout.KubeletUnit)
	if err != nil {
		t.Fatal(err)
	}
	containerd, err := mgr.State(ctx, layout.ContainerdUnit)
	if err != nil {
		t.Fatal(err)
	}
	if kubelet.Active != "active" || containerd.Active != "active" {
		t.Fatalf("kubelet %+v, containerd %+v: want both active (kubelet Requires containerd)", kubelet, containerd)
	}
	if containerd.ActiveEnter > kubelet.ActiveEnter {
		t.Errorf("containerd became active after the kubelet (After=containerd.service): %d > %d", containerd.ActiveEnter, kubelet.ActiveEnter)
	}
	want := strings.Join(out.KubeletArgs, " ")
	if got := readWhen("/var/lib/fake/kubelet.args", func(s string) bool { return s == want }); got != want {
		t.Errorf("kubelet ran with\n  %s\nwant the drop-in's\n  %s", got, want)
	}

	// Start of an active unit: the same process.
	if err := mgr.Start(ctx, layout.KubeletUnit); err != nil {
		t.Fatal(err)
	}
	again, _ := mgr.State(ctx, layout.KubeletUnit)
	if again.MainPID != kubelet.MainPID || read("/var/lib/fake/kubelet.starts") != "start" {
		t.Errorf("starting an active kubelet restarted it: pid %d → %d, starts %q", kubelet.MainPID, again.MainPID, read("/var/lib/fake/kubelet.starts"))
	}

	// A changed drop-in, daemon-reload and a restart: the new arguments, a new process, containerd untouched.
	in.Config.Kubelet.ExtraArgs["v"] = "4"
	out2, err := render.Node(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range out2.Files {
		if f.Path == in.Paths.KubeletDropIn {
			if err := install(m.Root, []render.File{f}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := mgr.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mgr.Restart(ctx, layout.KubeletUnit); err != nil {
		t.Fatal(err)
	}
	restarted, _ := mgr.State(ctx, layout.KubeletUnit)
	args := readWhen("/var/lib/fake/kubelet.args", func(s string) bool { return strings.Contains(s, "--v=4") })
	if restarted.MainPID == kubelet.MainPID || !strings.Contains(args, "--v=4") {
		t.Errorf("restart: pid %d → %d, args %q", kubelet.MainPID, restarted.MainPID, args)
	}
	if c, _ := mgr.State(ctx, layout.ContainerdUnit); c.MainPID != containerd.MainPID {
		t.Errorf("containerd restarted with the kubelet: pid %d → %d", containerd.MainPID, c.MainPID)
	}

	// A unit that fails: the error names the job result and the unit's state.
	err = mgr.Start(ctx, "failing.service")
	if err == nil || !strings.Contains(err.Error(), "job failed") || !strings.Contains(err.Error(), "failed/failed") {
		t.Errorf("failing unit: %v", err)
	}
}
