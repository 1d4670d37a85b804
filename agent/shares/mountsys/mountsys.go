// Package mountsys makes mount(2) and umount2(2) calls that a signal does not fail: a path on a cifs or NFS share
// is looked up over the network, interruptibly, and the Go runtime's own signals (SIGURG, which preempts
// goroutines) interrupt such a wait on a busy machine; the call then fails with EINTR having done nothing, and is
// made again. The os package does this for its own calls; these are the mount calls it does not make, and Retry
// is for any other raw call on a share's path.
package mountsys

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"
)

// Mount is mount(2), made again while it is interrupted, until ctx ends.
func Mount(ctx context.Context, source, target, fstype string, flags uintptr, data string) error {
	return Retry(ctx, func() error { return unix.Mount(source, target, fstype, flags, data) })
}

// Unmount is umount2(2), made again while it is interrupted, until ctx ends.
func Unmount(ctx context.Context, target string, flags int) error {
	return Retry(ctx, func() error { return unix.Unmount(target, flags) })
}

// Retry calls f again while it fails with EINTR, until ctx ends; it returns f's last error.
func Retry(ctx context.Context, f func() error) error {
	for {
		err := f()
		if !errors.Is(err, unix.EINTR) || ctx.Err() != nil {
			return err
		}
	}
}
