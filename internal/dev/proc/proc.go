// Package proc starts and stops the real daemons that berth's tests and dev tools run (etcd, kube-apiserver,
// containerd, kubelet, ...). Each process gets its own process group and log file, and a record in a registry
// directory. A record names the process by pid and kernel start time, and names its owner the same way, so a later
// run can find and kill what a killed run left behind without ever matching processes by name, and without
// killing an unrelated process that reused a pid.
package proc

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"berth.dev/berth/internal/node/atomicfile"
)

// Registry is the directory that holds one record per running process.
type Registry struct {
	Dir string
	Log *slog.Logger
}

// DefaultRegistry returns the registry in $BERTH_RUN_DIR, or /run/berth (cleared at boot, like the processes it
// tracks), or a directory under the system temp dir when /run is not writable.
func DefaultRegistry(log *slog.Logger) Registry {
	if log == nil {
		log = slog.Default()
	}
	if d := os.Getenv("BERTH_RUN_DIR"); d != "" {
		return Registry{Dir: d, Log: log}
	}
	if err := os.MkdirAll("/run/berth/procs", 0o755); err == nil {
		return Registry{Dir: "/run/berth/procs", Log: log}
	}
	return Registry{Dir: filepath.Join(os.TempDir(), "berth-procs"), Log: log}
}

// Record describes one started process. It never holds argv or environment, which may carry secrets.
type Record struct {
	Name      string `json:"name"`
	Group     string `json:"group"`
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
	// OwnerPID/OwnerStartTime identify the process that owns this one; 0 means detached (owned by its group,
	// stopped only by StopGroup, as `berth-dev controlplane down` does).
	OwnerPID       int    `json:"ownerPID"`
	OwnerStartTime uint64 `json:"ownerStartTime"`
	Log            string `json:"log"`
}

// Running reports whether the recorded process is still running (the same process: pid and start time match).
func (r Record) Running() bool { return isAlive(r.PID, r.StartTime) }

// Orphaned reports whether the record has an owner and that owner has exited.
func (r Record) Orphaned() bool { return r.OwnerPID != 0 && !isAlive(r.OwnerPID, r.OwnerStartTime) }

// Self returns this process's pid and start time, the identity that owned records carry.
func Self() (pid int, startTime uint64) {
	pid = os.Getpid()
	if st, err := readStat(pid); err == nil {
		startTime = st.startTime
	}
	return pid, startTime
}

// Spec says what to start.
type Spec struct {
	Name  string   // short component name, used in records and errors
	Group string   // what the process belongs to, e.g. the control plane's state directory
	Path  string   // executable
	Args  []string // arguments, never secrets
	Env   []string // extra environment on top of os.Environ()
	Dir   string   // working directory
	Log   string   // file that receives stdout and stderr (appended)
	// Detached processes start a new session and outlive this process; others are owned by it.
	Detached bool
}

// Process is a started process.
type Process struct {
	Record
	reg     Registry
	recPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start starts spec's process and records it.
func (r Registry) Start(spec Spec) (*Process, error) {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("start %s: registry: %w", spec.Name, err)
	}
	if err := os.MkdirAll(filepath.Dir(spec.Log), 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	logf, err := os.OpenFile(spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: log: %w", spec.Name, err)
	}
	defer logf.Close()
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = spec.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if spec.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	p := &Process{reg: r, cmd: cmd, done: make(chan struct{})}
	p.Record = Record{Name: spec.Name, Group: spec.Group, PID: cmd.Process.Pid, Log: spec.Log}
	if st, err := readStat(p.PID); err == nil {
		p.StartTime = st.startTime
	}
	if !spec.Detached {
		p.OwnerPID, p.OwnerStartTime = Self()
	}
	p.recPath = filepath.Join(r.Dir, fmt.Sprintf("%d-%d.json", p.PID, p.StartTime))
	data, _ := json.Marshal(p.Record)
	if err := atomicfile.Write(p.recPath, data, 0o644); err != nil {
		killGroup(p.PID, syscall.SIGKILL)
		cmd.Wait()
		return nil, fmt.Errorf("start %s: record: %w", spec.Name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if spec.Detached {
		// Nobody will wait for it after this process exits; release it now.
		go func() { <-p.done }()
	}
	r.Log.Debug("started", "component", spec.Name, "pid", p.PID, "log", spec.Log)
	return p, nil
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitErr returns how the process exited; call it only after Exited is closed.
func (p *Process) ExitErr() error { return p.waitErr }

// Stop sends SIGTERM to the process group, waits up to grace, then sends SIGKILL, and removes the record.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
	default:
		killGroup(p.PID, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			p.reg.Log.Warn("did not stop in time, killing", "component", p.Name, "pid", p.PID, "grace", grace)
			killGroup(p.PID, syscall.SIGKILL)
			<-p.done
		}
	}
	// Children that stayed in the group (none expected) go too.
	killGroup(p.PID, syscall.SIGKILL)
	if err := os.Remove(p.recPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stop %s: %w", p.Name, err)
	}
	return nil
}

// Records lists the registry's records.
func (r Registry) Records() ([]Record, []string, error) {
	entries, err := os.ReadDir(r.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read registry %s: %w", r.Dir, err)
	}
	var recs []Record
	var paths []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(r.Dir, e.Name())
		data, err := os.ReadFile(path)
		if err != nil {
			continue // removed meanwhile
		}
		var rec Record
		if err := json.Unmarshal(data, &rec); err != nil {
			r.Log.Warn("removing unreadable process record", "path", path, "err", err)
			os.Remove(path)
			continue
		}
		recs = append(recs, rec)
		paths = append(paths, path)
	}
	return recs, paths, nil
}

// Sweep kills every recorded process whose owner is gone (a test binary that was killed or timed out) and removes
// its record. Detached processes are left alone. It returns what it killed.
func (r Registry) Sweep() ([]Record, error) {
	return r.kill(Record.Orphaned, 0)
}

// StopGroup stops every recorded process of group, owned or detached: SIGTERM, then SIGKILL after grace.
func (r Registry) StopGroup(group string, grace time.Duration) ([]Record, error) {
	return r.Stop(func(rec Record) bool { return rec.Group == group }, grace)
}

// Stop stops every recorded process that match selects: SIGTERM, then SIGKILL after grace (at once if grace is 0).
func (r Registry) Stop(match func(Record) bool, grace time.Duration) ([]Record, error) {
	return r.kill(match, grace)
}

func (r Registry) kill(match func(Record) bool, grace time.Duration) ([]Record, error) {
	recs, paths, err := r.Records()
	if err != nil {
		return nil, err
	}
	var victims []Record
	var victimPaths []string
	for i, rec := range recs {
		if match(rec) {
			victims = append(victims, rec)
			victimPaths = append(victimPaths, paths[i])
		}
	}
	for _, rec := range victims {
		if isAlive(rec.PID, rec.StartTime) {
			r.Log.Info("stopping recorded process", "component", rec.Name, "group", rec.Group, "pid", rec.PID)
			sig := syscall.SIGTERM
			if grace == 0 {
				sig = syscall.SIGKILL
			}
			killGroup(rec.PID, sig)
		}
	}
	deadline := time.Now().Add(grace + 10*time.Second)
	killed := grace == 0
	for _, rec := range victims {
		for isAlive(rec.PID, rec.StartTime) {
			if !killed && time.Now().After(deadline.Add(-10*time.Second)) {
				for _, v := range victims {
					if isAlive(v.PID, v.StartTime) {
						killGroup(v.PID, syscall.SIGKILL)
					}
				}
				killed = true
			}
			if time.Now().After(deadline) {
				return victims, fmt.Errorf("process %d (%s) did not exit after SIGKILL", rec.PID, rec.Name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, p := range victimPaths {
		os.Remove(p)
	}
	return victims, nil
}

// killGroup signals the process group led by pid (every process here leads its own group).
func killGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		syscall.Kill(-pid, sig)
	}
}

type stat struct {
	state     byte
	startTime uint64
}

// readStat reads the state and start time (clock ticks since boot) of pid from /proc/<pid>/stat.
func readStat(pid int) (stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces or parentheses: parse after the last ')'.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return stat{}, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 20 {
		return stat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields))
	}
	st, err := strconv.ParseUint(fields[19], 10, 64) // field 22 overall
	if err != nil {
		return stat{}, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	return stat{state: fields[0][0], startTime: st}, nil
}

// isAlive reports whether pid is running and is the process that started at startTime (0: any).
// A zombie whose threads have all exited counts as gone: it holds no ports or files, and only its parent (here
// often a PID 1 that does not reap) can remove it. A thread-group leader shows as a zombie while its other threads
// are still exiting and holding the process's sockets, so those count as alive.
func isAlive(pid int, startTime uint64) bool {
	st, err := readStat(pid)
	if err != nil || (startTime != 0 && st.startTime != startTime) {
		return false
	}
	if st.state == 'Z' || st.state == 'X' {
		tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
		return err == nil && len(tasks) > 1
	}
	return true
}

// Tail returns the last n lines of a log file, for error messages.
func Tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Defaults fills in what an owner's config left nil: slog.Default() and DefaultRegistry.
func Defaults(log *slog.Logger, reg *Registry) (*slog.Logger, *Registry) {
	if log == nil {
		log = slog.Default()
	}
	if reg == nil {
		r := DefaultRegistry(log)
		reg = &r
	}
	return log, reg
}
