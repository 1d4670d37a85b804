package controlplane_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"berth.dev/berth/internal/dev/controlplane"
	cptest "berth.dev/berth/test/controlplane"

	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/toolbin"
)

const helperEnv = "BERTH_CONTROLPLANE_TEST_HELPER"

// TestMain doubles as the helper process of TestKilledRunIsCleanedUp: with helperEnv set, it starts a control
// plane in that directory, prints its ports, and blocks until it is killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(runHelper(dir))
	}
	os.Exit(m.Run())
}

type helperPorts struct{ API, EtcdClient, EtcdPeer, KCM, Scheduler int }

func runHelper(dir string) int {
	bin, err := toolbin.Kubernetes.Dir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cp, err := controlplane.Start(context.Background(), controlplane.Config{Dir: dir, BinDir: bin, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	c := cp.Config()
	json.NewEncoder(os.Stdout).Encode(helperPorts{c.APIServerPort, c.EtcdClientPort, c.EtcdPeerPort, c.ControllerManagerPort, c.SchedulerPort})
	select {} // until SIGKILL
}

// A test binary killed mid-run (SIGKILL, a go test timeout) cannot clean up. The next run must find the processes
// it left, by their records, and kill them, freeing their ports.
func TestKilledRunIsCleanedUp(t *testing.T) {
	bin := toolbin.Kubernetes.ForTest(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, "BERTH_K8S_BIN="+bin)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var ports helperPorts
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || json.Unmarshal([]byte(line), &ports) != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper did not report its ports: %q %v", line, err)
	}
	reg := proc.DefaultRegistry(nil)
	recs, _, err := reg.Records()
	if err != nil {
		t.Fatal(err)
	}
	var orphans []proc.Record
	for _, r := range recs {
		if r.Group == dir {
			orphans = append(orphans, r)
		}
	}
	if len(orphans) != len(controlplane.Components) {
		t.Fatalf("helper's control plane has %d process records, want one per component %v: %+v", len(orphans), controlplane.Components, orphans)
	}

	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	for _, r := range orphans {
		if !r.Running() {
			t.Fatalf("%s (pid %d) died with its owner; this test needs it orphaned to mean anything", r.Name, r.PID)
		}
	}

	// A new control plane in another directory on the very same ports: it only starts if the orphans are gone.
	cptest.ForTest(t, controlplane.Config{APIServerPort: ports.API, EtcdClientPort: ports.EtcdClient, EtcdPeerPort: ports.EtcdPeer,
		ControllerManagerPort: ports.KCM, SchedulerPort: ports.Scheduler})
	var left []string
	for _, r := range orphans {
		if r.Running() {
			left = append(left, fmt.Sprintf("%s (pid %d)", r.Name, r.PID))
		}
	}
	if len(left) > 0 {
		t.Errorf("still running after the next run started: %s", strings.Join(left, ", "))
	}
}
