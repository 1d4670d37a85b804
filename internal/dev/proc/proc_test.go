package proc

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"log/slog"
)

func testRegistry(t *testing.T) Registry {
	return Registry{Dir: filepath.Join(t.TempDir(), "procs"), Log: slog.New(slog.DiscardHandler)}
}

// deadOwner returns the pid and start time of a process that has exited: a test binary killed mid-run.
func deadOwner(t *testing.T) (int, uint64) {
	cmd := exec.Command("sleep", "0.2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return cmd.Process.Pid, st.startTime
}

func startSleeper(t *testing.T) (*exec.Cmd, uint64) {
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
	st, err := readStat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, st.startTime
}

func writeRecord(t *testing.T, r Registry, rec Record) string {
	path := filepath.Join(r.Dir, fmt.Sprintf("%d-%d.json", rec.PID, rec.StartTime))
	data, _ := json.Marshal(rec)
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitGone(pid int, start uint64) bool {
	for i := 0; i < 200; i++ {
		if !isAlive(pid, start) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func TestSweepKillsOrphansOnly(t *testing.T) {
	r := testRegistry(t)
	ownerPID, ownerStart := deadOwner(t)

	orphan, orphanStart := startSleeper(t)
	orphanRec := writeRecord(t, r, Record{Name: "orphan", PID: orphan.Process.Pid, StartTime: orphanStart,
		OwnerPID: ownerPID, OwnerStartTime: ownerStart})

	owned, ownedStart := startSleeper(t)
	self, _ := readStat(os.Getpid())
	writeRecord(t, r, Record{Name: "owned", PID: owned.Process.Pid, StartTime: ownedStart,
		OwnerPID: os.Getpid(), OwnerStartTime: self.startTime})

	// A record whose pid now belongs to a different process (start time differs) must never be killed.
	reused, reusedStart := startSleeper(t)
	writeRecord(t, r, Record{Name: "reused", PID: reused.Process.Pid, StartTime: reusedStart + 1,
		OwnerPID: ownerPID, OwnerStartTime: ownerStart})

	detached, detachedStart := startSleeper(t)
	writeRecord(t, r, Record{Name: "detached", PID: detached.Process.Pid, StartTime: detachedStart})

	killed, err := r.Sweep()
	if err != nil {
		t.Fatal(err)
	}
	if len(killed) != 2 {
		t.Errorf("Sweep matched %d records, want 2 (orphan and the stale reused-pid record): %+v", len(killed), killed)
	}
	if !waitGone(orphan.Process.Pid, orphanStart) {
		t.Error("orphan whose owner is dead is still running")
	}
	if _, err := os.Stat(orphanRec); !os.IsNotExist(err) {
		t.Error("orphan's record was not removed")
	}
	for name, c := range map[string]struct {
		pid   int
		start uint64
	}{"owned": {owned.Process.Pid, ownedStart}, "reused": {reused.Process.Pid, reusedStart}, "detached": {detached.Process.Pid, detachedStart}} {
		if !isAlive(c.pid, c.start) {
			t.Errorf("%s process was killed by Sweep", name)
		}
	}
	recs, _, _ := r.Records()
	if len(recs) != 2 {
		t.Errorf("%d records left, want 2 (owned, detached)", len(recs))
	}
}

func TestStartStopAndStopGroup(t *testing.T) {
	r := testRegistry(t)
	dir := t.TempDir()
	p, err := r.Start(Spec{Name: "sh", Group: "g1", Path: "/bin/sh", Args: []string{"-c", "echo hello; sleep 300 & wait"},
		Log: filepath.Join(dir, "sh.log")})
	if err != nil {
		t.Fatal(err)
	}
	if p.OwnerPID != os.Getpid() {
		t.Errorf("owner = %d, want this process %d", p.OwnerPID, os.Getpid())
	}
	recs, _, _ := r.Records()
	if len(recs) != 1 || recs[0].PID != p.PID {
		t.Fatalf("records = %+v, want one for pid %d", recs, p.PID)
	}
	// Stop only once the shell has written its line: on a loaded machine a SIGTERM right after the start can
	// arrive before the echo runs.
	for deadline := time.Now().Add(10 * time.Second); Tail(filepath.Join(dir, "sh.log"), 5) != "hello" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("process still running after Stop")
	}
	if recs, _, _ := r.Records(); len(recs) != 0 {
		t.Errorf("records left after Stop: %+v", recs)
	}
	if got := Tail(filepath.Join(dir, "sh.log"), 5); got != "hello" {
		t.Errorf("log = %q, want %q", got, "hello")
	}

	d, err := r.Start(Spec{Name: "detached", Group: "g2", Path: "sleep", Args: []string{"300"}, Log: filepath.Join(dir, "d.log"), Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.OwnerPID != 0 {
		t.Errorf("detached process has owner %d, want 0", d.OwnerPID)
	}
	if _, err := r.Sweep(); err != nil {
		t.Fatal(err)
	}
	if !isAlive(d.PID, d.StartTime) {
		t.Fatal("Sweep killed a detached process")
	}
	stopped, err := r.StopGroup("g2", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(stopped) != 1 || isAlive(d.PID, d.StartTime) {
		t.Errorf("StopGroup stopped %d, process alive=%v; want 1 stopped and gone", len(stopped), isAlive(d.PID, d.StartTime))
	}
}
