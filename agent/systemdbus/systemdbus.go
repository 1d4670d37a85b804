// Package systemdbus runs units through systemd's D-Bus API (github.com/coreos/go-systemd/v22/dbus): daemon-reload,
// start and restart jobs whose result is awaited, and the unit's state when a job fails. It never execs systemctl.
// Only methods that systemd 229 (Ubuntu 16.04) has are used.
package systemdbus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Manager talks to one systemd instance.
type Manager struct {
	conn *dbus.Conn
}

// Connect opens the system bus of this machine.
func Connect(ctx context.Context) (*Manager, error) {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd over the system bus: %w", err)
	}
	return &Manager{conn: conn}, nil
}

// ConnectSocket opens a system bus by its socket path, e.g. a container's <root>/run/dbus/system_bus_socket.
func ConnectSocket(ctx context.Context, socket string) (*Manager, error) {
	conn, err := dbus.NewConnection(func() (*godbus.Conn, error) {
		c, err := godbus.Dial("unix:path="+socket, godbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("connect to systemd over %s: %w", socket, err)
	}
	return &Manager{conn: conn}, nil
}

// Close closes the connection.
func (m *Manager) Close() { m.conn.Close() }

// Reload is daemon-reload: systemd reads changed unit files and drop-ins.
func (m *Manager) Reload(ctx context.Context) error {
	if err := m.conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("daemon-reload: %w", err)
	}
	return nil
}

// Start starts unit (and what it requires) unless it is active, and waits for the job.
func (m *Manager) Start(ctx context.Context, unit string) error {
	return m.job(ctx, "start", unit, m.conn.StartUnitContext)
}

// Restart restarts unit, or starts it if it is not active, and waits for the job.
func (m *Manager) Restart(ctx context.Context, unit string) error {
	return m.job(ctx, "restart", unit, m.conn.RestartUnitContext)
}

func (m *Manager) job(ctx context.Context, verb, unit string, call func(context.Context, string, string, chan<- string) (int, error)) error {
	done := make(chan string, 1)
	if _, err := call(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("%s %s: %w", verb, unit, err)
	}
	select {
	case result := <-done:
		if result == "done" {
			return nil
		}
		return fmt.Errorf("%s %s: job %s (%s)", verb, unit, result, m.describe(ctx, unit))
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w (%s)", verb, unit, ctx.Err(), m.describe(ctx, unit))
	}
}

// State is a unit's ActiveState, SubState and, for services, the main process, its exit status, the result and
// the daemon's own STATUS= text.
type State struct {
	Active, Sub string
	MainPID     uint32
	// ActiveEnter is when the unit last became active (µs since the epoch); a restart changes it.
	ActiveEnter uint64
	// ExecMainStatus is the main process's last exit status; Result is success, exit-code, watchdog, ...
	ExecMainStatus int32
	Result         string
	// StatusText is what the service last sent as sd_notify STATUS=.
	StatusText string
	// WatchdogPing is when the service last sent sd_notify WATCHDOG=1 (µs since the epoch; 0 before the first).
	WatchdogPing uint64
	// NRestarts counts the restarts systemd made of it (Restart=) since it was last started by hand.
	NRestarts uint32
}

// State reads a unit's state (GetUnitProperty works on systemd 229; ListUnitsByNames needs 230). NRestarts needs
// systemd 235: on older ones (Ubuntu 16.04's 229) it reads 0.
func (m *Manager) State(ctx context.Context, unit string) (State, error) {
	var s State
	for _, p := range []struct {
		iface, name string
		into        func(godbus.Variant)
		optional    bool // a property older systemd versions lack: left zero there
	}{
		{"", "ActiveState", func(v godbus.Variant) { s.Active, _ = v.Value().(string) }, false},
		{"", "SubState", func(v godbus.Variant) { s.Sub, _ = v.Value().(string) }, false},
		{"", "ActiveEnterTimestamp", func(v godbus.Variant) { s.ActiveEnter, _ = v.Value().(uint64) }, false},
		{"Service", "MainPID", func(v godbus.Variant) { s.MainPID, _ = v.Value().(uint32) }, false},
		{"Service", "ExecMainStatus", func(v godbus.Variant) { s.ExecMainStatus, _ = v.Value().(int32) }, false},
		{"Service", "Result", func(v godbus.Variant) { s.Result, _ = v.Value().(string) }, false},
		{"Service", "StatusText", func(v godbus.Variant) { s.StatusText, _ = v.Value().(string) }, false},
		{"Service", "WatchdogTimestamp", func(v godbus.Variant) { s.WatchdogPing, _ = v.Value().(uint64) }, false},
		{"Service", "NRestarts", func(v godbus.Variant) { s.NRestarts, _ = v.Value().(uint32) }, true},
	} {
		var prop *dbus.Property
		var err error
		if p.iface == "" {
			prop, err = m.conn.GetUnitPropertyContext(ctx, unit, p.name)
		} else {
			prop, err = m.conn.GetUnitTypePropertyContext(ctx, unit, p.iface, p.name)
		}
		if err != nil && p.optional {
			continue
		}
		if err != nil {
			return s, fmt.Errorf("%s %s: %w", unit, p.name, err)
		}
		p.into(prop.Value)
	}
	return s, nil
}

func (m *Manager) describe(ctx context.Context, unit string) string {
	// Its own deadline: it runs after ctx may have ended, and a hung bus must not hang the error path.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if strings.HasSuffix(unit, ".mount") {
		s, err := m.MountState(ctx, unit)
		if err != nil {
			return "state unknown: " + err.Error()
		}
		return fmt.Sprintf("%s/%s", s.Active, s.Sub)
	}
	s, err := m.State(ctx, unit)
	if err != nil {
		return "state unknown: " + err.Error()
	}
	return fmt.Sprintf("%s/%s", s.Active, s.Sub)
}

// SystemState is systemd's overall state (running, degraded, starting, ...) and the failed units, if any. Listing
// them needs systemd 230 (ListUnitsFiltered); on older systemd the list says it could not be read.
func (m *Manager) SystemState(ctx context.Context) (string, []string, error) {
	p, err := m.conn.SystemStateContext(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("system state: %w", err)
	}
	state, _ := p.Value.Value().(string)
	units, err := m.conn.ListUnitsFilteredContext(ctx, []string{"failed"})
	if err != nil {
		return state, []string{"(cannot list: " + err.Error() + ")"}, nil
	}
	var failed []string
	for _, u := range units {
		failed = append(failed, u.Name)
	}
	return state, failed, nil
}

// StartTransient creates and starts a transient unit with props (mode "fail": refused while a job for the unit
// is queued) and waits for its job. systemd forgets the unit once it stops, unless it failed: ResetFailed.
func (m *Manager) StartTransient(ctx context.Context, unit string, props []dbus.Property) error {
	return m.job(ctx, "start", unit, func(ctx context.Context, name, _ string, ch chan<- string) (int, error) {
		return m.conn.StartTransientUnitContext(ctx, name, "fail", props, ch)
	})
}

// Stop stops unit and waits for the job; stopping a unit that is not active, or that systemd does not know, is
// done at once.
func (m *Manager) Stop(ctx context.Context, unit string) error {
	err := m.job(ctx, "stop", unit, m.conn.StopUnitContext)
	if noSuchUnit(err) {
		return nil
	}
	return err
}

func noSuchUnit(err error) bool {
	var dbusErr godbus.Error
	return errors.As(err, &dbusErr) && dbusErr.Name == "org.freedesktop.systemd1.NoSuchUnit"
}

// ResetFailed forgets a unit's failed state (and a failed transient unit altogether); a unit systemd does not know
// is not an error.
func (m *Manager) ResetFailed(ctx context.Context, unit string) error {
	err := m.conn.ResetFailedUnitContext(ctx, unit)
	if noSuchUnit(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reset-failed %s: %w", unit, err)
	}
	return nil
}

// MountState is a mount unit's state: ActiveState, SubState, what is mounted and the unit's Result (success,
// exit-code, timeout, ...).
type MountState struct {
	Active, Sub, What, Result string
}

// MountState reads a mount unit's state; a unit systemd does not know reads as inactive.
func (m *Manager) MountState(ctx context.Context, unit string) (MountState, error) {
	var s MountState
	for _, p := range []struct {
		iface, name string
		into        *string
	}{
		{"", "ActiveState", &s.Active}, {"", "SubState", &s.Sub}, {"Mount", "What", &s.What}, {"Mount", "Result", &s.Result},
	} {
		var prop *dbus.Property
		var err error
		if p.iface == "" {
			prop, err = m.conn.GetUnitPropertyContext(ctx, unit, p.name)
		} else {
			prop, err = m.conn.GetUnitTypePropertyContext(ctx, unit, p.iface, p.name)
		}
		if err != nil {
			return s, fmt.Errorf("%s %s: %w", unit, p.name, err)
		}
		*p.into, _ = prop.Value.Value().(string)
	}
	return s, nil
}
