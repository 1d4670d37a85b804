package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/wait"
)

// The logs role as the DaemonSet runs it, the agent binary against a real VictoriaLogs with two sinks (OTLP and
// Loki): every line reaches each sink once with its pod's fields; SIGTERM exits 0 leaving 0600 checkpoints; a
// restart ships only the lines written since.
func TestLogsRole(t *testing.T) {
	vl := logbackend.StartVictoriaLogs(t)
	agent := toolbin.Agent(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "pods")
	state := filepath.Join(dir, "state")
	logFile := filepath.Join(root, "demo_hello_0c0c0c0c-0000-0000-0000-000000000000", "web", "0.log")
	write := func(from, to int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for i := from; i < to; i++ {
			fmt.Fprintf(f, "%s stdout F role line %04d\n", time.Now().UTC().Format(time.RFC3339Nano), i)
		}
	}
	config := writeShipperConfig(t, dir, root, state, fmt.Sprintf(`
  sinks:
  - {name: otlp, type: otlp, url: "%s/insert/opentelemetry", batch: {linger: 100ms}}
  - {name: loki, type: loki, url: "%s/insert", batch: {linger: 100ms}}
  metrics:
    node: {collectors: [meminfo, loadavg]}
`, vl.URL, vl.URL))
	if out, err := exec.Command(agent, "logs", "validate", "-f", config).CombinedOutput(); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	start := func() (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(agent, "logs", "run", "-config", config, "-node", "node-7", "-metrics-address", fmt.Sprintf("127.0.0.1:%d", port))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	stop := func(cmd *exec.Cmd, out *strings.Builder) {
		t.Helper()
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("logs run after SIGTERM: %v\n%s", err, out)
		}
	}
	write(0, 400)
	cmd, out := start()
	// OTLP gives k8s.pod.name, Loki gives pod: one query per sink.
	vl.Count(t, `"role line" k8s.pod.name:hello`, 400)
	vl.Count(t, `"role line" pod:hello node:node-7`, 400)
	// Its own metrics: what each sink shipped, and (after a rescan) nothing left to read.
	wait.For(t, 30*time.Second, "the shipped and lag metrics", func() bool {
		resp, err := http.Get(metricsURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := string(b)
		return strings.Contains(m, `berth_logs_shipped_records_total{sink="otlp"} 400`) &&
			strings.Contains(m, `berth_logs_shipped_records_total{sink="loki"} 400`) &&
			strings.Contains(m, `berth_logs_lag_bytes{path="`+logFile+`",sink="loki"} 0`) &&
			// The node's metrics beside them, node_exporter's (spec.metrics.node), from this machine's /proc.
			strings.Contains(m, "\nnode_memory_MemTotal_bytes ") && strings.Contains(m, "\nnode_load1 ")
	})
	if resp, err := http.Get(strings.TrimSuffix(metricsURL, "metrics") + "healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	}
	stop(cmd, out)
	for _, name := range []string{"otlp", "loki"} {
		fi, err := os.Stat(filepath.Join(state, name+".checkpoint.json"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s checkpoint: %v, %v", name, fi, err)
		}
	}
	write(400, 450)
	cmd, out = start()
	defer stop(cmd, out)
	vl.Count(t, `"role line" k8s.pod.name:hello`, 450)
	vl.Count(t, `"role line" pod:hello`, 450)
}

// writeShipperConfig writes dir/logs.yaml, a LogShipperConfig reading the pods' logs under root with its state in
// state, and the rest of its spec (sinks, metrics: YAML indented two spaces), and returns its path.
func writeShipperConfig(t testing.TB, dir, root, state, rest string) string {
	t.Helper()
	config := filepath.Join(dir, "logs.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("apiVersion: logs.berth.dev/v1alpha1\nkind: LogShipperConfig\nspec:\n  podLogs: {path: %s}\n  stateDir: %s%s",
		root, state, rest)), 0o600); err != nil {
		t.Fatal(err)
	}
	return config
}
