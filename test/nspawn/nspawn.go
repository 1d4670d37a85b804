// Package nspawn boots a real systemd in a systemd-nspawn container for the systemd tier: the Debian 12 node
// image's rootfs (the image builder's cached tarball), booted with --register=no --keep-unit (this host's PID 1 is
// not systemd) and a private network, its system bus bound to a directory the host can reach. containerd and the
// kubelet cannot run in it (cgroups are read-only there); units, drop-ins, daemon-reload, jobs, ordering and
// sd_notify work for real.
package nspawn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"berth.dev/berth/agent/systemdbus"
	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/rootfs"
	"berth.dev/berth/internal/dev/proc"
)

// Config describes one container.
type Config struct {
	Dir  string // holds the root tree, the bus directory and logs
	Name string // machine name (also the hostname)
	// Prepare runs on the root tree before boot (install units, fake binaries).
	Prepare  func(root string) error
	Registry *proc.Registry
	Log      *slog.Logger
}

// Machine is a booted container.
type Machine struct {
	Root string // the container's root tree, writable from the host
	Bus  string // its system bus socket
	p    *proc.Process
	grp  *proc.Group
	// cgroup is the container's own cgroup (under trackingHierarchies).
	cgroup string
}

// Rootfs is the Debian 12 rootfs tarball the containers boot, built with mmdebstrap on first use and cached.
func Rootfs(ctx context.Context, log *slog.Logger) (string, error) {
	p, err := distro.Get("debian-12")
	if err != nil {
		return "", err
	}
	tar, _, err := rootfs.Cached(ctx, rootfs.Spec{Suite: p.Suite, Sources: p.Sources, Packages: p.AllPackages()},
		filepath.Join(bake.DefaultCacheDir(), "rootfs"), log)
	return tar, err
}

// Boot extracts the rootfs, runs Prepare, boots it and waits until systemd reports running (or degraded, with
// the failed units named in the error).
func Boot(ctx context.Context, cfg Config) (_ *Machine, err error) {
	cfg.Log, cfg.Registry = proc.Defaults(cfg.Log, cfg.Registry)
	if _, err := exec.LookPath("systemd-nspawn"); err != nil {
		return nil, fmt.Errorf("systemd-nspawn: %w (apt package systemd-container)", err)
	}
	if _, err := cfg.Registry.Sweep(); err != nil {
		return nil, err
	}
	tar, err := Rootfs(ctx, cfg.Log)
	if err != nil {
		return nil, err
	}
	m := &Machine{Root: filepath.Join(cfg.Dir, "root"), Bus: filepath.Join(cfg.Dir, "bus", "system_bus_socket"),
		grp: &proc.Group{Registry: *cfg.Registry, Dir: cfg.Dir}}
	for _, d := range []string{m.Root, filepath.Dir(m.Bus)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if out, err := exec.CommandContext(ctx, "tar", "-xf", tar, "-C", m.Root).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("extract %s: %w: %s", tar, err, out)
	}
	// The host has no sunrpc (rpc_pipefs fails), and the runtime cannot run here.
	for _, u := range []string{"run-rpc_pipefs.mount", "containerd.service", "cloud-init.service", "cloud-init-local.service",
		"cloud-config.service", "cloud-final.service", "ssh.service", "systemd-networkd-wait-online.service"} {
		link := filepath.Join(m.Root, "etc/systemd/system", u)
		os.Remove(link)
		if err := os.Symlink("/dev/null", link); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(m.Root, "etc/hostname"), []byte(cfg.Name+"\n"), 0o644); err != nil {
		return nil, err
	}
	if cfg.Prepare != nil {
		if err := cfg.Prepare(m.Root); err != nil {
			return nil, fmt.Errorf("prepare root: %w", err)
		}
	}
	// A cgroup of its own: with --keep-unit nspawn stays in its caller's cgroup, the root on this host, and puts the
	// container in "payload" below it, so two containers at once would share one cgroup tree and each systemd would
	// prune the other's units' cgroups (a umount's control process then fails with 219/CGROUP). The shell joins the
	// cgroup in the hierarchies systemd tracks processes in, then becomes systemd-nspawn.
	sum := sha256.Sum256([]byte(m.Root))
	m.cgroup = "berth-nspawn-" + cfg.Name + "-" + hex.EncodeToString(sum[:4])
	for _, h := range trackingHierarchies {
		if err := os.MkdirAll(filepath.Join(cgroupRoot, h, m.cgroup), 0o755); err != nil {
			return nil, fmt.Errorf("cgroup for the container: %w", err)
		}
	}
	join := "for h in " + strings.Join(trackingHierarchies, " ") + "; do echo $$ > " + cgroupRoot + "/$h/" + m.cgroup + "/cgroup.procs || exit 1; done; exec systemd-nspawn \"$@\""
	m.p, err = m.grp.Start("nspawn", "sh", "-c", join, "nspawn", "-D", m.Root, "-b", "--register=no", "--keep-unit",
		"--private-network", "--console=read-only", "-M", cfg.Name, "--bind="+filepath.Dir(m.Bus)+":/run/dbus")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.Stop()
		}
	}()
	return m, m.waitRunning(ctx)
}

func (m *Machine) waitRunning(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var last string
	for {
		if _, err := os.Stat(m.Bus); err == nil {
			if mgr, err := systemdbus.ConnectSocket(ctx, m.Bus); err == nil {
				state, failed, err := mgr.SystemState(ctx)
				mgr.Close()
				switch {
				case err != nil:
				case state == "running":
					return nil
				case state == "degraded":
					return fmt.Errorf("container booted degraded: failed units %s", strings.Join(failed, ", "))
				default:
					last = state
				}
			}
		}
		select {
		case <-m.p.Exited():
			return fmt.Errorf("systemd-nspawn exited: %v; log:\n%s", m.p.ExitErr(), proc.Tail(m.p.Log, 30))
		case <-ctx.Done():
			return fmt.Errorf("container not running (last state %q): %w; log:\n%s", last, ctx.Err(), proc.Tail(m.p.Log, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop powers the container off (nspawn turns SIGTERM into a clean shutdown) and kills it if that takes long.
func (m *Machine) Stop() error {
	err := proc.StopAll(m.grp.Take(), 15*time.Second)
	if m.cgroup != "" {
		for _, h := range trackingHierarchies {
			removeCgroupTree(filepath.Join(cgroupRoot, h, m.cgroup))
		}
	}
	return err
}

const cgroupRoot = "/sys/fs/cgroup"

// trackingHierarchies are the cgroup hierarchies systemd tracks processes in on this host (cgroup v1 with the
// named systemd hierarchy, and the unified one mounted beside it).
var trackingHierarchies = []string{"systemd", "unified"}

// removeCgroupTree removes an emptied cgroup directory and those below it, deepest first (best effort: a cgroup
// that still has a process stays).
func removeCgroupTree(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i])
	}
}

// Log is the container's console log.
func (m *Machine) Log() string { return m.p.Log }

// NSRoot is the container's root as its own mount namespace sees it (/proc/<its init>/root): unlike Root, paths
// under it show what is mounted inside the container (its /run, mounts made by its systemd).
func (m *Machine) NSRoot() (string, error) {
	pid, err := m.initPID()
	if err != nil {
		return "", err
	}
	return "/proc/" + pid + "/root", nil
}

// initPID is the container's init, the one child of systemd-nspawn.
func (m *Machine) initPID() (string, error) {
	children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", m.p.PID, m.p.PID))
	if err != nil {
		return "", fmt.Errorf("find the container's init: %w", err)
	}
	fields := strings.Fields(string(children))
	if len(fields) != 1 {
		return "", fmt.Errorf("find the container's init: systemd-nspawn (pid %d) has children %q", m.p.PID, fields)
	}
	return fields[0], nil
}

// Sh runs a shell script inside the container (nsenter into its init's namespaces, so systemctl reaches its
// systemd) and returns the combined output.
func (m *Machine) Sh(ctx context.Context, script string) (string, error) {
	pid, err := m.initPID()
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, "nsenter", "-t", pid, "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--",
		"/bin/sh", "-c", script).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in the container: %s: %w: %s", script, err, out)
	}
	return string(out), nil
}
