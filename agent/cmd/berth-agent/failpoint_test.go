package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKillPlan(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "plan"), []byte("# phase delay\nfiles 0s\nfiles 30ms\ncni 0s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// process starts one "agent process": a fresh plan over the same directory, whose kill only counts.
	process := func() (*killPlan, chan struct{}) {
		k := loadKillPlan(dir, log)
		if k == nil {
			t.Fatal("plan not loaded")
		}
		killed := make(chan struct{}, 2)
		k.kill = func() { killed <- struct{}{} }
		return k, killed
	}
	record := func(i int) string {
		data, _ := os.ReadFile(filepath.Join(dir, "killed-0"+string(rune('0'+i))))
		return string(data)
	}

	// First process: killed as files starts.
	k, killed := process()
	k.beforePhase("discover")
	k.beforePhase("files")
	if len(killed) != 1 || !strings.Contains(record(0), "target=files after=0s landed=files") {
		t.Fatalf("step 0: %d kills, record %q", len(killed), record(0))
	}
	// Second process: files arms the 30 ms step, which lands in the phase the agent has moved on to.
	k, killed = process()
	k.beforePhase("files")
	k.beforePhase("kubelet")
	select {
	case <-killed:
	case <-time.After(5 * time.Second):
		t.Fatal("the 30ms step never fired")
	}
	if r := record(1); !strings.Contains(r, "target=files after=30ms landed=kubelet into=") {
		t.Errorf("step 1 record %q", r)
	}
	// Third process: nothing left for files; cni fires at its start; one kill per process only.
	k, killed = process()
	k.beforePhase("files")
	k.beforePhase("cni")
	k.beforePhase("cni")
	if len(killed) != 1 || !strings.Contains(record(2), "target=cni") {
		t.Errorf("third process: %d kills, record %q", len(killed), record(2))
	}
	// A fourth process finds every step fired.
	k, killed = process()
	for _, p := range []string{"files", "cni"} {
		k.beforePhase(p)
	}
	// Nothing fires at once, and no delayed step is armed to fire later.
	k.mu.Lock()
	armed := k.armed
	k.mu.Unlock()
	if len(killed) != 0 || armed != 0 {
		t.Errorf("a fired step fired again (%d kills, %d armed)", len(killed), armed)
	}
}

func TestKillPlanRefusesBadLines(t *testing.T) {
	for plan, want := range map[string]string{
		"files\n":           "plan line 1",
		"files 0s\ncni x\n": `plan line 2: delay "x"`,
		"files -1s\n":       "plan line 1",
	} {
		if _, err := parseKillPlan([]byte(plan)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", plan, err, want)
		}
	}
	if k := loadKillPlan(t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil))); k != nil {
		t.Error("a directory without a plan armed the failpoint")
	}
}
