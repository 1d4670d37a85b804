// Package netns creates network namespaces for tests and dev tools, and dials into them. Test traffic stays inside
// namespaces this package created or on loopback: the dialer opens its socket inside the namespace, so the host
// needs no route, veth or address to reach a server bound there.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// NS is a named network namespace (ip-netns(8) style, bound at /run/netns/<name>).
type NS struct{ Name string }

// Path is the namespace's bind mount, usable with nsenter --net=.
func (n NS) Path() string { return filepath.Join("/run/netns", n.Name) }

// Create makes the namespace, deleting a stale one of the same name first, and brings its loopback up.
func Create(name string) (NS, error) {
	n := NS{Name: name}
	if _, err := os.Stat(n.Path()); err == nil {
		if err := n.Delete(); err != nil {
			return NS{}, err
		}
	}
	if err := run("ip", "netns", "add", name); err != nil {
		return NS{}, err
	}
	if err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		n.Delete()
		return NS{}, err
	}
	return n, nil
}

// Delete removes the namespace. Links inside it go with it.
func (n NS) Delete() error {
	if _, err := os.Stat(n.Path()); os.IsNotExist(err) {
		return nil
	}
	return run("ip", "netns", "delete", n.Name)
}

// Run runs a command inside the namespace.
func (n NS) Run(name string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Output runs a command inside the namespace and returns its stdout.
func (n NS) Output(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
		}
	}
	return string(out), err
}

// Command returns the argv prefix that runs a program inside the namespace while keeping its pid (nsenter execs).
func (n NS) Command(path string, args ...string) (string, []string) {
	return "nsenter", append([]string{"--net=" + n.Path(), "--", path}, args...)
}

// DialContext dials addr from inside the namespace.
func (n NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return DialIn(ctx, n.Path(), network, addr)
}

// DialIn dials addr with a socket created in the network namespace at path (In).
func DialIn(ctx context.Context, path, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := In(path, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr with a socket created in the network namespace at path (In); the listener serves from
// any goroutine.
func (n NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := In(n.Path(), func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// In runs f on an OS thread switched into the network namespace at path: sockets f creates belong to the
// namespace for good. The thread is never returned to the scheduler (the goroutine exits locked, so the runtime
// destroys the thread), so no other goroutine can run in the namespace by accident.
func In(path string, f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		ns, err := os.Open(path)
		if err != nil {
			ch <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		ch <- f()
	}()
	return <-ch
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
