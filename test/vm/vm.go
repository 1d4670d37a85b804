// Package vm boots disk images as test guests: qemu with TCG (imagebuilder/qemu), a NoCloud seed that authorizes
// a key generated for this guest, the serial console captured to a file, and commands run in the guest over SSH
// on a forwarded loopback port. Guests are always killed at test cleanup; nothing is sent outside loopback.
package vm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/imagebuilder/qemu"
	"berth.dev/berth/test/ports"
)

// Config describes a test guest.
type Config struct {
	Name   string // hostname; default "guest"
	Image  string
	Format string // raw (default), qcow2, vpc
	// UserData is extra #cloud-config, merged after the harness's own (which authorizes the SSH key for root).
	UserData string
	// GuestForwards map addresses in the guest's network to loopback ports on the host (e.g. the control plane).
	GuestForwards []qemu.GuestForward
	// BootTimeout bounds the wait for SSH; default 5 minutes (a Debian guest reaches cloud-init done in ~45 s).
	BootTimeout time.Duration
}

// Guest is a running test guest.
type Guest struct {
	*qemu.Machine
	t    testing.TB
	key  string
	port int
}

// Boot starts a guest and waits until SSH answers. The guest is stopped at the end of the test, and its console
// tail is logged if the test failed.
func Boot(t testing.TB, cfg Config) *Guest {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "guest"
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 5 * time.Minute
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	userData := fmt.Sprintf("#cloud-config\nlocale: C.UTF-8\ndisable_root: false\nusers:\n  - name: root\n    lock_passwd: true\n    ssh_authorized_keys: [%q]\n", strings.TrimSpace(string(pub)))
	if extra := strings.TrimPrefix(strings.TrimSpace(cfg.UserData), "#cloud-config"); extra != "" {
		userData += strings.TrimLeft(extra, "\n") + "\n"
	}
	m, err := qemu.Start(context.Background(), qemu.Config{Name: cfg.Name, Dir: dir, Image: cfg.Image, Format: cfg.Format,
		Seed: qemu.Seed{UserData: userData}, SSHPort: port, GuestForwards: cfg.GuestForwards})
	if err != nil {
		t.Fatal(err)
	}
	g := &Guest{Machine: m, t: t, key: key, port: port}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s console (tail):\n%s", cfg.Name, m.Tail(40))
		}
		m.Stop()
	})
	deadline := time.Now().Add(cfg.BootTimeout)
	for {
		if _, err := g.run(10*time.Second, "true"); err == nil {
			return g
		}
		select {
		case <-m.Exited():
			t.Fatalf("guest %s exited before SSH answered; console:\n%s", cfg.Name, m.Tail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %s: no SSH within %v; console:\n%s", cfg.Name, cfg.BootTimeout, m.Tail(40))
		}
		time.Sleep(2 * time.Second)
	}
}

// Run runs a shell command in the guest as root and returns its stdout; a non-zero exit fails the test.
func (g *Guest) Run(cmd string) string {
	g.t.Helper()
	out, err := g.run(2*time.Minute, cmd)
	if err != nil {
		g.t.Fatalf("in guest: %s: %v", cmd, err)
	}
	return out
}

// Try runs a shell command in the guest and returns its stdout and error, for commands expected to fail.
func (g *Guest) Try(cmd string) (string, error) { return g.run(2*time.Minute, cmd) }

// Write writes data to path in the guest with mode, atomically (a temp file renamed into place), creating the
// directory; secrets go through stdin, never a command line.
func (g *Guest) Write(path string, data []byte, mode os.FileMode) {
	g.t.Helper()
	if err := g.put(bytes.NewReader(data), path, mode); err != nil {
		g.t.Fatalf("write %s in the guest: %v", path, err)
	}
}

// Copy copies a host file to path in the guest with mode, like Write.
func (g *Guest) Copy(local, path string, mode os.FileMode) {
	g.t.Helper()
	f, err := os.Open(local)
	if err != nil {
		g.t.Fatal(err)
	}
	defer f.Close()
	if err := g.put(f, path, mode); err != nil {
		g.t.Fatalf("copy %s to %s in the guest: %v", local, path, err)
	}
}

func (g *Guest) put(r io.Reader, path string, mode os.FileMode) error {
	tmp := path + ".berth-tmp"
	cmd := fmt.Sprintf("mkdir -p '%s' && umask 077 && cat > '%s' && chmod %o '%s' && mv '%s' '%s'", filepath.Dir(path), tmp, mode.Perm(), tmp, tmp, path)
	_, err := g.runStdin(10*time.Minute, cmd, r)
	return err
}

func (g *Guest) run(timeout time.Duration, cmd string) (string, error) {
	return g.runStdin(timeout, cmd, nil)
}

// Command returns an ssh command that runs cmd in the guest, for callers that talk to it over stdin and stdout.
func (g *Guest) Command(ctx context.Context, cmd string) *exec.Cmd {
	return exec.CommandContext(ctx, "ssh", "-i", g.key, "-p", strconv.Itoa(g.port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "root@127.0.0.1", cmd)
}

func (g *Guest) runStdin(timeout time.Duration, cmd string, stdin io.Reader) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := g.Command(ctx, cmd)
	c.Stdin = stdin
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
