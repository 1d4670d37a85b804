// Package mounter mounts shares and bind mounts as systemd transient mount units over D-Bus, so systemd tracks
// them, orders their unmount before the network goes down at shutdown (it does so for network file systems), and
// kills a mount helper that outlives the unit's timeout instead of leaving it hanging. Mount and Unmount are
// idempotent: a mount already in place is left alone, unmounting what is not mounted succeeds.
package mounter

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
	"github.com/coreos/go-systemd/v22/unit"
	godbus "github.com/godbus/dbus/v5"

	"berth.dev/berth/agent/systemdbus"
)

// Units is the part of systemd the mounter uses (systemdbus.Manager).
type Units interface {
	StartTransient(ctx context.Context, unit string, props []dbus.Property) error
	Stop(ctx context.Context, unit string) error
	ResetFailed(ctx context.Context, unit string) error
	MountState(ctx context.Context, unit string) (systemdbus.MountState, error)
}

// Journal reads a unit's last log lines (the mount helper's own messages); nil reads none.
type Journal func(ctx context.Context, unit string, lines int) string

// Mount is one mount.
type Mount struct {
	What  string // //server/share, server:/export, or a directory (for a bind mount)
	Where string // an absolute, clean path
	Type  string // cifs, nfs4, ...; empty for a bind mount
	// Options are passed as they are: they must not hold a secret (a unit's properties are readable by every
	// user); SMB passes credentials=<file>.
	Options []string
	// Timeout bounds the mount helper; systemd kills it after. 0: systemd's default (90 s).
	Timeout time.Duration
}

// Mounter mounts through systemd.
type Mounter struct {
	Units   Units
	Journal Journal
}

// UnitName is the mount unit systemd has for a path.
func UnitName(where string) string { return unit.UnitNamePathEscape(where) + ".mount" }

// Mount mounts m unless it is mounted already (for a bind mount: unless anything is mounted there). A failed mount leaves no unit behind, and its error carries the
// unit's result (exit-code, timeout, ...) and the helper's last messages.
func (mt Mounter) Mount(ctx context.Context, m Mount) error {
	if !filepath.IsAbs(m.Where) || filepath.Clean(m.Where) != m.Where {
		return fmt.Errorf("mount at %q: want an absolute, clean path", m.Where)
	}
	name := UnitName(m.Where)
	st, err := mt.Units.MountState(ctx, name)
	if err != nil {
		return fmt.Errorf("mount at %s: %w", m.Where, err)
	}
	if st.Active == "active" || st.Active == "reloading" {
		// A bind mount's What reads as the source's file system (systemd takes it from mountinfo): not comparable.
		if st.What != m.What && !slices.Contains(m.Options, "bind") {
			return fmt.Errorf("mount at %s: %s is mounted there, not %s", m.Where, st.What, m.What)
		}
		return nil
	}
	// A unit that failed before keeps its name taken until it is reset.
	if err := mt.Units.ResetFailed(ctx, name); err != nil {
		return fmt.Errorf("mount at %s: %w", m.Where, err)
	}
	props := []dbus.Property{
		dbus.PropDescription("berth share " + m.Where),
		{Name: "What", Value: godbus.MakeVariant(m.What)},
		{Name: "Where", Value: godbus.MakeVariant(m.Where)},
		{Name: "Options", Value: godbus.MakeVariant(strings.Join(m.Options, ","))},
	}
	if m.Type != "" {
		props = append(props, dbus.Property{Name: "Type", Value: godbus.MakeVariant(m.Type)})
	}
	if m.Timeout > 0 {
		props = append(props, dbus.Property{Name: "TimeoutUSec", Value: godbus.MakeVariant(uint64(m.Timeout / time.Microsecond))})
	}
	if err := mt.Units.StartTransient(ctx, name, props); err != nil {
		why := ""
		// Its own deadline: ctx may be over, and the error path must not hang.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if st, serr := mt.Units.MountState(dctx, name); serr == nil && st.Result != "" && st.Result != "success" {
			why = " (result: " + st.Result + ")"
		}
		if mt.Journal != nil {
			if lines := strings.TrimSpace(mt.Journal(dctx, name, 5)); lines != "" {
				why += ": " + strings.ReplaceAll(lines, "\n", "; ")
			}
		}
		if rerr := mt.Units.ResetFailed(dctx, name); rerr != nil {
			why += " (and " + rerr.Error() + ")"
		}
		return fmt.Errorf("mount %s at %s%s: %w", m.What, m.Where, why, err)
	}
	return nil
}

// Unmount unmounts where; nothing mounted there is not an error. A mount that is busy (umount refused) is tried
// again, up to five times a second apart, before its error (with the unit's last journal lines) is returned.
func (mt Mounter) Unmount(ctx context.Context, where string) error {
	name := UnitName(where)
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("unmount %s: %w (%v)", where, ctx.Err(), err)
			case <-time.After(time.Second):
			}
		}
		if err = mt.Units.Stop(ctx, name); err == nil {
			return mt.Units.ResetFailed(ctx, name)
		}
	}
	if mt.Journal != nil {
		if lines := strings.TrimSpace(mt.Journal(ctx, name, 5)); lines != "" {
			err = fmt.Errorf("%w: %s", err, strings.ReplaceAll(lines, "\n", "; "))
		}
	}
	return fmt.Errorf("unmount %s: %w", where, err)
}

// Forget waits, within ctx, for systemd to see that the mount at where is gone (it was detached under it: a dead
// share the health loop dropped) and forgets its unit, so that the path can be mounted again. Nothing mounted there
// is not an error.
func (mt Mounter) Forget(ctx context.Context, where string) error {
	name := UnitName(where)
	for {
		st, err := mt.Units.MountState(ctx, name)
		if err != nil {
			return fmt.Errorf("forget the mount at %s: %w", where, err)
		}
		if st.Active != "active" && st.Active != "reloading" && st.Active != "deactivating" {
			return mt.Units.ResetFailed(ctx, name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("forget the mount at %s: systemd still has it %s: %w", where, st.Active, ctx.Err())
		case <-time.After(100 * time.Millisecond): // systemd reads mountinfo on its own schedule; a poll is all there is
		}
	}
}

// JournalCtl reads a unit's last lines with journalctl (the journal has no D-Bus API; reading it natively needs
// cgo). root, if not empty, is another system's root directory whose journal to read. On this system it first asks
// journald to take in what it has queued (journalctl --sync returns after the daemon has read its pending input): a
// helper's last words reach journald through a stream socket, and on a busy node they would otherwise arrive after
// the read.
func JournalCtl(root string) Journal {
	return func(ctx context.Context, unit string, lines int) string {
		if root == "" {
			_ = exec.CommandContext(ctx, "journalctl", "--sync").Run() // best effort: the read below says what there is
		}
		args := []string{"-u", unit, "-o", "cat", "--no-pager", "-n", fmt.Sprint(lines)}
		if root != "" {
			args = append(args, "--root", root)
		}
		out, err := exec.CommandContext(ctx, "journalctl", args...).Output()
		if err != nil && errors.Is(err, exec.ErrNotFound) {
			return ""
		}
		return string(out)
	}
}
