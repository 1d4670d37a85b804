package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"berth.dev/berth/agent/shares/mountsys"
)

// KernelBinds are bind mounts made with mount(2) in this process's mount namespace (the node's, for the agent):
// the staging and pod paths are the kubelet's, so they are not systemd units (a pod path's unit name can pass
// systemd's 255-character limit); systemd still unmounts them, before the share under them, at shutdown. Every
// call is made again when a signal interrupts it (mountsys): the paths are on a share.
type KernelBinds struct{}

// Bind binds src at dst, read-only if asked (a bind mount takes ro only from a remount).
func (KernelBinds) Bind(ctx context.Context, src, dst string, readOnly bool) error {
	if err := mountsys.Mount(ctx, src, dst, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", src, dst, err)
	}
	if readOnly {
		if err := mountsys.Mount(ctx, "", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			if uerr := mountsys.Unmount(context.WithoutCancel(ctx), dst, unix.MNT_DETACH); uerr != nil {
				return fmt.Errorf("remount %s read-only: %w (and it stays bound: %v)", dst, err, uerr)
			}
			return fmt.Errorf("remount %s read-only: %w", dst, err)
		}
	}
	return nil
}

// Unbind unmounts dst; if the share under it is dead and the unmount fails, it detaches it (lazy), so a hung
// server cannot keep a pod from going.
func (KernelBinds) Unbind(ctx context.Context, dst string) error {
	err := mountsys.Unmount(ctx, dst, 0)
	if errors.Is(err, unix.EINVAL) { // not a mount point (any more)
		return nil
	}
	if err != nil {
		if lerr := mountsys.Unmount(context.WithoutCancel(ctx), dst, unix.MNT_DETACH); lerr != nil {
			return fmt.Errorf("unmount %s: %w (detach: %v)", dst, err, lerr)
		}
	}
	return nil
}

// Detach drops the mount at dst at once, lazily: it leaves the tree now, and its file system stays for the mounts
// that still hold it. Not forced: MNT_FORCE would abort the share's requests for every holder of its superblock,
// the running pods among them, whose mounts the kernel's client could still reconnect. Nothing mounted there is not
// an error.
func (KernelBinds) Detach(ctx context.Context, dst string) error {
	err := mountsys.Unmount(context.WithoutCancel(ctx), dst, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", dst, err)
	}
	return nil
}

// IsMounted says whether dst is a mount point, from /proc/self/mountinfo (a stat of a dead share would hang).
func (KernelBinds) IsMounted(dst string) (bool, error) {
	return isMountPoint("/proc/self/mountinfo", filepath.Clean(dst))
}

func isMountPoint(mountinfo, path string) (bool, error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescape(fields[4]) == path {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := parseOctal(s[i+1 : i+4]); err == nil {
				b.WriteByte(n)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func parseOctal(s string) (byte, error) {
	if len(s) != 3 {
		return 0, errors.New("short")
	}
	var n int
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, errors.New("not octal")
		}
		n = n*8 + int(c-'0')
	}
	return byte(n), nil
}
