// Package qemu boots a disk image under qemu-system-x86_64 with TCG (KVM guests hang on the build machines) and a
// NoCloud seed, captures the serial console to a file and lets callers wait for lines on it. The image itself is
// never written: the guest runs on a qcow2 overlay. Networking is qemu's user mode with restrict=on, so the guest
// reaches nothing outside; an optional forward maps a loopback port on the host to the guest's SSH, and guest
// forwards map an address in the guest's user network to a loopback port on the host (through socat, one process
// per connection, so the host side may come and go). Or the NIC is a tap device on the caller's bridge, with qemu
// run inside the caller's network namespace.
package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Seed is a NoCloud seed: the files of a "cidata" ISO.
type Seed struct {
	UserData      string
	MetaData      string // default: instance-id and hostname from Config.Name
	NetworkConfig string // optional
}

// Config describes a boot.
type Config struct {
	Name      string // hostname and file prefix
	Dir       string // work dir: overlay, seed, serial log
	Image     string // disk image (raw, qcow2 or fixed VHD)
	Format    string // image format: raw (default), qcow2, vpc
	Seed      Seed
	MemoryMiB int // default 2048
	CPUs      int // default 2
	// SSHPort, if not 0, forwards 127.0.0.1:SSHPort on the host to port 22 in the guest.
	SSHPort int
	// GuestForwards map addresses the guest connects to (in 10.0.2.0/24, e.g. 10.0.2.100:6443) to loopback ports
	// on the host.
	GuestForwards []GuestForward
	// Tap, if set, attaches the guest's NIC to an existing tap device (on a bridge the caller set up) instead of
	// the user network; SSHPort and GuestForwards must then be unset.
	Tap *Tap
	// NetNS runs qemu inside this network namespace (a /run/netns path), where Tap lives.
	NetNS string
}

// Tap is a tap device for the guest's NIC and the NIC's MAC address.
type Tap struct {
	Name string
	MAC  string
}

// GuestForward sends the guest's TCP connections to Guest (ip:port) to 127.0.0.1:HostPort.
type GuestForward struct {
	Guest    string
	HostPort int
}

// Machine is a running guest.
type Machine struct {
	cfg     Config
	overlay string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	Serial  string // path of the serial console log
}

// Prepared is a guest ready to boot: its overlay and seed are written, and Argv is the command that boots it (qemu,
// or nsenter running qemu in Config.NetNS). Callers that track processes themselves run Argv; Start runs it too.
type Prepared struct {
	Argv    []string
	Overlay string // the guest's disk, an overlay of the image (gigabytes once used: remove it after)
	Serial  string // the serial console log qemu will write
	Log     string // qemu's own stdout and stderr
}

// Prepare writes the guest's overlay and NoCloud seed into cfg.Dir and returns the command that boots it.
func Prepare(ctx context.Context, cfg Config) (*Prepared, error) {
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = 2048
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 2
	}
	if cfg.Format == "" {
		cfg.Format = "raw"
	}
	if cfg.Seed.MetaData == "" {
		cfg.Seed.MetaData = fmt.Sprintf("instance-id: %s-%d\nlocal-hostname: %s\n", cfg.Name, time.Now().UnixNano(), cfg.Name)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(cfg.Image)
	if err != nil {
		return nil, err
	}
	overlay := filepath.Join(cfg.Dir, cfg.Name+".overlay.qcow2")
	os.Remove(overlay)
	if out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", abs, "-F", cfg.Format, overlay).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("overlay for %s: %w: %s", cfg.Image, err, out)
	}
	seed, err := writeSeed(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Tap != nil && (cfg.SSHPort != 0 || len(cfg.GuestForwards) > 0) {
		return nil, errors.New("qemu: Tap: SSHPort and GuestForwards need the user network; unset them with a tap")
	}
	p := &Prepared{Overlay: overlay, Serial: filepath.Join(cfg.Dir, cfg.Name+".serial.log"), Log: filepath.Join(cfg.Dir, cfg.Name+".qemu.log")}
	netdev := "user,id=n0,restrict=on"
	nic := "virtio-net-pci,netdev=n0"
	if cfg.Tap != nil {
		netdev = "tap,id=n0,ifname=" + cfg.Tap.Name + ",script=no,downscript=no"
		nic += ",mac=" + cfg.Tap.MAC
	}
	if cfg.SSHPort != 0 {
		netdev += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-:22", cfg.SSHPort)
	}
	if len(cfg.GuestForwards) > 0 {
		if _, err := exec.LookPath("socat"); err != nil {
			return nil, errors.New("guest forwards need socat (apt package socat)")
		}
	}
	for _, f := range cfg.GuestForwards {
		// A chardev target would be connected once, at start; cmd: runs per connection.
		netdev += fmt.Sprintf(",guestfwd=tcp:%s-cmd:socat - TCP:127.0.0.1:%d", f.Guest, f.HostPort)
	}
	args := []string{
		"-accel", "tcg", "-machine", "pc", "-cpu", "max", "-m", strconv.Itoa(cfg.MemoryMiB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nographic", "-no-reboot", "-serial", "file:" + p.Serial, "-monitor", "none",
		"-drive", "file=" + overlay + ",if=virtio,format=qcow2,cache=unsafe,discard=unmap",
		"-drive", "file=" + seed + ",if=virtio,format=raw,readonly=on",
		"-netdev", netdev, "-device", nic,
	}
	p.Argv = append([]string{"qemu-system-x86_64"}, args...)
	if cfg.NetNS != "" {
		p.Argv = append([]string{"nsenter", "--net=" + cfg.NetNS, "--"}, p.Argv...)
	}
	return p, nil
}

// Start boots the guest as a child of this process.
func Start(ctx context.Context, cfg Config) (*Machine, error) {
	p, err := Prepare(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, overlay: p.Overlay, done: make(chan struct{}), Serial: p.Serial}
	m.cmd = exec.Command(p.Argv[0], p.Argv[1:]...)
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(p.Log)
	if err != nil {
		return nil, err
	}
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() {
		m.err = m.cmd.Wait()
		logf.Close()
		close(m.done)
	}()
	return m, nil
}

// writeSeed makes the cidata ISO with genisoimage.
func writeSeed(ctx context.Context, cfg Config) (string, error) {
	dir := filepath.Join(cfg.Dir, cfg.Name+".seed")
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	files := map[string]string{"user-data": cfg.Seed.UserData, "meta-data": cfg.Seed.MetaData}
	if cfg.Seed.NetworkConfig != "" {
		files["network-config"] = cfg.Seed.NetworkConfig
	}
	for name, content := range files {
		// user-data may hold secrets (join tokens): 0600.
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return "", err
		}
	}
	iso := filepath.Join(cfg.Dir, cfg.Name+".seed.iso")
	if out, err := exec.CommandContext(ctx, "genisoimage", "-quiet", "-output", iso, "-volid", "cidata", "-joliet", "-rock", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("seed ISO: %w: %s", err, out)
	}
	return iso, nil
}

// Exited is closed when qemu has exited (the guest powered off, or was killed).
func (m *Machine) Exited() <-chan struct{} { return m.done }

// WaitFor waits until the serial console shows a line containing marker, and returns that line. It fails when
// the guest exits first, or on ctx's deadline, with the end of the console in the error.
func (m *Machine) WaitFor(ctx context.Context, marker string) (string, error) {
	var offset int64
	var partial string
	for {
		if f, err := os.Open(m.Serial); err == nil {
			f.Seek(offset, 0)
			r := bufio.NewReader(f)
			for {
				chunk, err := r.ReadString('\n')
				offset += int64(len(chunk))
				if err != nil { // incomplete line: keep it for the next round
					partial += chunk
					break
				}
				line := strings.TrimRight(partial+chunk, "\r\n")
				partial = ""
				if strings.Contains(line, marker) {
					f.Close()
					return line, nil
				}
			}
			f.Close()
		}
		select {
		case <-m.done:
			// One more read could still find it; the loop above ran after the last write only if done was
			// closed before, so check the whole file once.
			if data, err := os.ReadFile(m.Serial); err == nil {
				for _, line := range strings.Split(string(data), "\n") {
					if strings.Contains(line, marker) {
						return strings.TrimRight(line, "\r"), nil
					}
				}
			}
			return "", fmt.Errorf("guest %s exited (%v) before %q appeared; console tail:\n%s", m.cfg.Name, m.err, marker, m.Tail(30))
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %q on %s's console: %w; console tail:\n%s", marker, m.cfg.Name, ctx.Err(), m.Tail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Tail returns the last n lines of the serial console.
func (m *Machine) Tail(n int) string {
	data, _ := os.ReadFile(m.Serial)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop kills qemu if it still runs and waits for it, then removes the overlay (the image is untouched).
func (m *Machine) Stop() error {
	select {
	case <-m.done:
	default:
		syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
	}
	return os.Remove(m.overlay)
}

// WaitExit waits for the guest to power off by itself.
func (m *Machine) WaitExit(ctx context.Context) error {
	select {
	case <-m.done:
		var ee *exec.ExitError
		if m.err != nil && !errors.As(m.err, &ee) {
			return m.err
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("guest %s did not power off: %w", m.cfg.Name, ctx.Err())
	}
}
