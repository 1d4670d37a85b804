// Package vm boots disk images as test guests: qemu with TCG (imagebuilder/qemu), a NoCloud seed that authorizes
// a key generated for this guest, the serial console captured to a file, and commands run in the guest over SSH
// on a forwarded loopback port. Guests are always killed at test cleanup; nothing is sent outside loopback.
package vm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"berth.dev/berth/imagebuilder/qemu"
	"berth.dev/berth/internal/dev/guestssh"
	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/tier"
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
	t       testing.TB
	ssh     guestssh.Target
	qemu    *proc.Process
	serial  string
	overlay string
}

// Boot starts a guest and waits until SSH answers. The guest is stopped at the end of the test, and its console
// tail is logged if the test failed.
func Boot(t testing.TB, cfg Config) *Guest {
	t.Helper()
	tier.Require(t, tier.QEMU)
	if cfg.Name == "" {
		cfg.Name = "guest"
	}
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 5 * time.Minute
	}
	dir := t.TempDir()
	key, pub, err := guestssh.NewKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	userData := guestssh.UserData(pub, cfg.UserData)
	// qemu runs under test/proc's registry: if this test binary is killed, the next one sweeps the guest.
	_, reg := proc.Defaults(nil, nil)
	if _, err := reg.Sweep(); err != nil {
		t.Fatal(err)
	}
	prep, err := qemu.Prepare(context.Background(), qemu.Config{Name: cfg.Name, Dir: dir, Image: cfg.Image, Format: cfg.Format,
		Seed: qemu.Seed{UserData: userData}, SSHPort: port, GuestForwards: cfg.GuestForwards})
	if err != nil {
		t.Fatal(err)
	}
	p, err := reg.Start(proc.Spec{Name: cfg.Name, Group: dir, Path: prep.Argv[0], Args: prep.Argv[1:], Log: prep.Log})
	if err != nil {
		t.Fatal(err)
	}
	g := &Guest{t: t, ssh: guestssh.Target{Key: key, Port: port}, qemu: p, serial: prep.Serial, overlay: prep.Overlay}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- %s console (tail):\n%s", cfg.Name, g.Tail(40))
		}
		g.Stop()
	})
	deadline := time.Now().Add(cfg.BootTimeout)
	for {
		if _, err := g.run(10*time.Second, "true"); err == nil {
			return g
		}
		select {
		case <-p.Exited():
			t.Fatalf("guest %s exited before SSH answered; console:\n%s", cfg.Name, g.Tail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest %s: no SSH within %v; console:\n%s", cfg.Name, cfg.BootTimeout, g.Tail(40))
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

// Write writes data to path in the guest with mode, atomically, creating the directory; secrets go through
// stdin, never a command line.
func (g *Guest) Write(path string, data []byte, mode os.FileMode) {
	g.t.Helper()
	if err := g.ssh.Put(context.Background(), bytes.NewReader(data), path, mode); err != nil {
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
	if err := g.ssh.Put(context.Background(), f, path, mode); err != nil {
		g.t.Fatalf("copy %s to %s in the guest: %v", local, path, err)
	}
}

// Tail is the last n lines of the guest's serial console.
func (g *Guest) Tail(n int) string { return proc.Tail(g.serial, n) }

// Stop kills the guest (a test guest has nothing to shut down cleanly) and removes its overlay; safe to repeat.
func (g *Guest) Stop() error {
	err := g.qemu.Stop(0)
	os.Remove(g.overlay)
	return err
}

// SSH is how the guest is reached.
func (g *Guest) SSH() guestssh.Target { return g.ssh }

// Command returns an ssh command that runs cmd in the guest, for callers that talk to it over stdin and stdout.
func (g *Guest) Command(ctx context.Context, cmd string) *exec.Cmd { return g.ssh.Command(ctx, cmd) }

func (g *Guest) run(timeout time.Duration, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return g.ssh.Run(ctx, cmd, nil)
}
