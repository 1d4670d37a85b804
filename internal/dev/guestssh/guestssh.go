// Package guestssh runs commands in test guests over SSH as root, with a key generated for the guest and
// authorized through its cloud-init user data. A guest is reached on a loopback port forward (qemu user
// networking) or, with NetNS, at its address on a bridge inside a network namespace; ssh then runs inside that
// namespace, so nothing is sent outside it.
package guestssh

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
	"time"
)

// NewKey writes a new ed25519 key pair into dir (id_ed25519, id_ed25519.pub) and returns the private key's path
// and the public key line.
func NewKey(dir string) (key, pub string, err error) {
	key = filepath.Join(dir, "id_ed25519")
	os.Remove(key)
	os.Remove(key + ".pub")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f", key).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("ssh-keygen: %w: %s", err, out)
	}
	data, err := os.ReadFile(key + ".pub")
	if err != nil {
		return "", "", err
	}
	return key, strings.TrimSpace(string(data)), nil
}

// UserData is #cloud-config that lets pub log in as root, followed by extra's keys (another #cloud-config
// document whose top-level keys are not locale, disable_root or users).
func UserData(pub, extra string) string {
	ud := fmt.Sprintf("#cloud-config\nlocale: C.UTF-8\ndisable_root: false\nusers:\n  - name: root\n    lock_passwd: true\n    ssh_authorized_keys: [%q]\n", pub)
	if extra = strings.TrimPrefix(strings.TrimSpace(extra), "#cloud-config"); extra != "" {
		ud += strings.TrimLeft(extra, "\n") + "\n"
	}
	return ud
}

// Target is where and how to reach a guest.
type Target struct {
	Key   string // private key
	Host  string // default 127.0.0.1
	Port  int    // default 22
	NetNS string // run ssh inside this network namespace (a /run/netns path)
}

// Command returns the ssh command that runs cmd in the guest.
func (t Target) Command(ctx context.Context, cmd string) *exec.Cmd {
	host, port := t.Host, t.Port
	if host == "" {
		host = "127.0.0.1"
	}
	if port == 0 {
		port = 22
	}
	args := []string{"ssh", "-i", t.Key, "-p", strconv.Itoa(port),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "root@" + host, cmd}
	if t.NetNS != "" {
		args = append([]string{"nsenter", "--net=" + t.NetNS, "--"}, args...)
	}
	return exec.CommandContext(ctx, args[0], args[1:]...)
}

// Run runs cmd with stdin (may be nil) and returns its stdout; the error carries ssh's and the command's stderr.
// A connection that fails before the command starts (a loaded guest's sshd answering late) is tried again, a
// second apart, until ctx ends.
func (t Target) Run(ctx context.Context, cmd string, stdin io.Reader) (string, error) {
	var in []byte
	if stdin != nil {
		var err error
		if in, err = io.ReadAll(stdin); err != nil {
			return "", err
		}
	}
	for {
		c := t.Command(ctx, cmd)
		c.Stdin = bytes.NewReader(in)
		var stdout, stderr bytes.Buffer
		c.Stdout, c.Stderr = &stdout, &stderr
		err := c.Run()
		if err == nil {
			return stdout.String(), nil
		}
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
		// A loaded guest's sshd may not greet in time: the command never ran, so it is safe to ask again.
		if !unreached(c, stderr.String()) || ctx.Err() != nil {
			return stdout.String(), err
		}
		select {
		case <-ctx.Done():
			return stdout.String(), err
		case <-time.After(time.Second):
		}
	}
}

// unreached says whether ssh failed before the command started: its own exit status 255 with a connection-level
// message (a remote command's own 255 carries none of these).
func unreached(c *exec.Cmd, stderr string) bool {
	if c.ProcessState == nil || c.ProcessState.ExitCode() != 255 {
		return false
	}
	for _, m := range []string{"during banner exchange", "kex_exchange_identification", "Connection refused", "Connection timed out",
		"Connection reset by peer", "Connection closed by"} {
		if strings.Contains(stderr, m) {
			return true
		}
	}
	return false
}

// Wait runs cmd every poll until ok accepts its output, and returns that output. When ctx ends first, the error
// carries the last output and error.
func (t Target) Wait(ctx context.Context, cmd string, poll time.Duration, ok func(string) bool) (string, error) {
	for {
		out, err := t.Run(ctx, cmd, nil)
		if err == nil && ok(out) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("%s: %w; last output %q (error %v)", cmd, ctx.Err(), out, err)
		case <-time.After(poll):
		}
	}
}

// Put writes r to path in the guest with mode, atomically (a temp file renamed into place), creating the
// directory. Secrets go through stdin, never a command line.
func (t Target) Put(ctx context.Context, r io.Reader, path string, mode os.FileMode) error {
	tmp := path + ".berth-tmp"
	cmd := fmt.Sprintf("mkdir -p '%s' && umask 077 && cat > '%s' && chmod %o '%s' && mv '%s' '%s'", filepath.Dir(path), tmp, mode.Perm(), tmp, tmp, path)
	_, err := t.Run(ctx, cmd, r)
	return err
}
