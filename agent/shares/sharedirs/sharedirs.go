// Package sharedirs makes and removes directories on a share for the Controller service: the share is mounted for
// the one operation with mount(2) itself, in a mount namespace of a thread of its own, so that nothing else on the
// machine sees the mount, a crash leaves none behind (the namespace ends with its thread), and no mount helper is
// needed (the controller's image has none). The kernel takes cifs and NFSv4 options as mount data: the server's
// address resolved here (ip=, addr=), the SMB password in the data, never on a command line or in a file.
package sharedirs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"berth.dev/berth/agent/shares/mountopts"
	"berth.dev/berth/agent/shares/mountsys"
	"berth.dev/berth/agent/shares/volume"
)

// MountFunc mounts source at target (mount(2)); tests pass another to mount a tmpfs where the kernel has no
// cifs or NFS client.
type MountFunc func(source, target, fstype, data string) error

// Kernel makes directories on shares it mounts with mount(2). The zero value mounts with unix.Mount and resolves
// with the system's resolver.
type Kernel struct {
	Mount    MountFunc
	Resolver *net.Resolver
}

// Make creates dir and its parents, mode 0777.
func (k Kernel) Make(ctx context.Context, share volume.Volume, creds volume.Credentials, dir string) error {
	return k.do(ctx, share, creds, func(root string) error {
		p, err := inside(root, dir)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(p, 0o777); err != nil {
			return err
		}
		return os.Chmod(p, 0o777) // not the umask's: who writes is the share's and the pods' fsGroup's to say
	})
}

// Remove removes dir and what it holds.
func (k Kernel) Remove(ctx context.Context, share volume.Volume, creds volume.Credentials, dir string) error {
	return k.do(ctx, share, creds, func(root string) error {
		p, err := inside(root, dir)
		if err != nil {
			return err
		}
		return os.RemoveAll(p)
	})
}

// Rename renames dir to to; a dir already gone is not an error.
func (k Kernel) Rename(ctx context.Context, share volume.Volume, creds volume.Credentials, dir, to string) error {
	return k.do(ctx, share, creds, func(root string) error {
		from, err := inside(root, dir)
		if err != nil {
			return err
		}
		dst, err := inside(root, to)
		if err != nil {
			return err
		}
		if err := os.Rename(from, dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
}

// inside joins a clean relative path to root, refusing one that leaves it.
func inside(root, rel string) (string, error) {
	p := filepath.Join(root, rel)
	if rel == "" || filepath.IsAbs(rel) || !strings.HasPrefix(p, root+string(filepath.Separator)) {
		return "", fmt.Errorf("%q: not a directory inside the share", rel)
	}
	return p, nil
}

// do mounts the share on a private thread's own mount namespace, runs fn on its root there, and unmounts it.
func (k Kernel) do(ctx context.Context, share volume.Volume, creds volume.Credentials, fn func(root string) error) error {
	source, fstype, data, err := k.mountData(ctx, share, creds)
	if err != nil {
		return err
	}
	mount := k.Mount
	if mount == nil {
		mount = func(source, target, fstype, data string) error { return unix.Mount(source, target, fstype, 0, data) }
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, with its mount namespace, goes when the goroutine ends.
		runtime.LockOSThread()
		done <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("a mount namespace of its own: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make the mount namespace private: %w", err)
			}
			dir, err := os.MkdirTemp("", "berth-share-")
			if err != nil {
				return err
			}
			defer os.Remove(dir)
			if err := mountsys.Retry(ctx, func() error { return mount(source, dir, fstype, data) }); err != nil {
				return fmt.Errorf("mount %s: %w", share.Source(), err)
			}
			defer mountsys.Unmount(context.WithoutCancel(ctx), dir, unix.MNT_DETACH)
			return fn(dir)
		}()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done(): // a server that does not answer: the thread stays in the kernel until it gives up
		return fmt.Errorf("%s: %w", share.Source(), ctx.Err())
	}
}

// mountData is what mount(2) is given for the share's root.
func (k Kernel) mountData(ctx context.Context, share volume.Volume, creds volume.Credentials) (source, fstype, data string, err error) {
	ip := share.Server
	if net.ParseIP(ip) == nil {
		r := k.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		addrs, err := r.LookupIPAddr(ctx, share.Server)
		if err != nil || len(addrs) == 0 {
			return "", "", "", fmt.Errorf("resolve %s: %v", share.Server, err)
		}
		ip = addrs[0].IP.String()
	}
	root := share
	root.SubDir = ""
	switch share.Protocol {
	case mountopts.SMB:
		opts := []string{"vers=3.0", "ip=" + ip, "nosharesock"}
		if creds.Username == "" {
			opts = append(opts, "sec=none")
		} else {
			for _, kv := range [][2]string{{"username", creds.Username}, {"password", string(creds.Password)}, {"domain", creds.Domain}} {
				if kv[1] != "" {
					opts = append(opts, kv[0]+"="+strings.ReplaceAll(kv[1], ",", ",,")) // the kernel's escape for a comma
				}
			}
		}
		return root.Source(), "cifs", strings.Join(opts, ","), nil
	case mountopts.NFS:
		return root.Source(), "nfs4", "vers=4.1,addr=" + ip, nil
	}
	return "", "", "", fmt.Errorf("protocol %q", share.Protocol)
}
