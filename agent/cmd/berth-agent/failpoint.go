package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"berth.dev/berth/internal/node/atomicfile"
)

// killPlanEnv names a directory that turns on a test failpoint: the agent SIGKILLs itself where the directory's
// file "plan" says, so that under systemd one boot's join is interrupted at chosen points and must still converge.
// Tests only; unset on real nodes.
//
// Each plan line is "<phase> <delay>" (a Go duration): when that phase starts, the agent kills itself after the
// delay, wherever it then is (0s: at the phase start). Each line fires once: a fired line leaves "killed-NN" (NN
// its index), saying in which phase and how far into it the kill landed; a restarted agent skips it. A process
// arms at most one line per phase start, the first that has not fired.
const killPlanEnv = "BERTH_AGENT_TEST_KILL_PLAN"

type killStep struct {
	phase string
	after time.Duration
}

// killPlan is the failpoint's state in one agent process.
type killPlan struct {
	dir   string
	steps []killStep
	log   *slog.Logger
	kill  func() // SIGKILLs this process; tests replace it

	mu         sync.Mutex
	phase      string
	phaseStart time.Time
	killing    bool
	armed      int // delayed steps armed (timers started) by this process
}

// loadKillPlan reads the plan in dir; nil when dir is empty. A plan that cannot be read is logged and ignored:
// a failpoint must not change what the agent does otherwise.
func loadKillPlan(dir string, log *slog.Logger) *killPlan {
	if dir == "" {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(dir, "plan"))
	if err == nil {
		var steps []killStep
		if steps, err = parseKillPlan(data); err == nil {
			return &killPlan{dir: dir, steps: steps, log: log, kill: sigkillSelf,
				phase: "(before the first phase)", phaseStart: time.Now()}
		}
	}
	log.Warn("failpoint: no usable kill plan; not killing", "env", killPlanEnv, "err", err)
	return nil
}

func parseKillPlan(data []byte) ([]killStep, error) {
	var steps []killStep
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("plan line %d: want \"<phase> <delay>\", got %q", line, sc.Text())
		}
		d, err := time.ParseDuration(f[1])
		if err != nil || d < 0 {
			return nil, fmt.Errorf("plan line %d: delay %q: want a duration ≥ 0", line, f[1])
		}
		steps = append(steps, killStep{phase: f[0], after: d})
	}
	return steps, sc.Err()
}

func (k *killPlan) marker(i int) string { return filepath.Join(k.dir, fmt.Sprintf("killed-%02d", i)) }

// beforePhase is join.Config.BeforePhase: it records where the agent is and arms the phase's next step.
func (k *killPlan) beforePhase(phase string) {
	k.at(phase)
	for i, s := range k.steps {
		if s.phase != phase {
			continue
		}
		if _, err := os.Stat(k.marker(i)); err == nil {
			continue
		}
		if s.after == 0 {
			k.fire(i)
			return
		}
		k.mu.Lock()
		k.armed++
		k.mu.Unlock()
		time.AfterFunc(s.after, func() { k.fire(i) })
		return
	}
}

// at records that the agent entered phase (or left the phases: "(between applies)").
func (k *killPlan) at(phase string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.phase, k.phaseStart = phase, time.Now()
}

// fire records step i with where it landed, then kills the process. Only one step fires per process.
func (k *killPlan) fire(i int) {
	k.mu.Lock()
	if k.killing {
		k.mu.Unlock()
		return
	}
	k.killing = true
	landed, into := k.phase, time.Since(k.phaseStart)
	k.mu.Unlock()
	s := k.steps[i]
	record := fmt.Sprintf("step=%d target=%s after=%s landed=%s into=%s\n", i, s.phase, s.after, landed, into.Round(time.Microsecond))
	if err := os.MkdirAll(k.dir, 0o700); err == nil {
		err = atomicfile.Write(k.marker(i), []byte(record), 0o600)
		if err != nil {
			k.log.Warn("failpoint: record", "err", err)
		}
	}
	k.log.Warn("failpoint: SIGKILL", "step", i, "target", s.phase, "after", s.after, "landed", landed, "into", into, "env", killPlanEnv)
	k.kill()
}

func sigkillSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is on its way
}
