package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/syncbuf"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/wait"
)

// The shipper as the DaemonSet runs it, the berth-logs binary against a real VictoriaLogs with two sinks (OTLP and
// Loki): every line reaches each sink once with its pod's fields; SIGTERM exits 0 leaving 0600 checkpoints; a
// restart ships only the lines written since.
func TestLogsRole(t *testing.T) {
	f := newFixture(t, filepath.Join("demo_hello_0c0c0c0c-0000-0000-0000-000000000000", "web"))
	vl := f.vl
	write := func(from, to int) { logbackend.AppendCRI(t, f.logFile, "role line %04d", from, to) }
	config := writeShipperConfig(t, f.dir, f.root, f.state, fmt.Sprintf(`
  sinks:
  - {name: otlp, type: otlp, url: "%s/insert/opentelemetry", batch: {linger: 100ms}}
  - {name: loki, type: loki, url: "%s/insert", batch: {linger: 100ms}}
  metrics:
    node: {collectors: [meminfo, loadavg]}
`, vl.URL, vl.URL))
	if out, err := exec.Command(f.shipper, "validate", "-f", config).CombinedOutput(); err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	start := func() (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(f.shipper, "run", "-config", config, "-node", "node-7", "-metrics-address", f.addr)
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
	// The node's metrics beside them, node_exporter's (spec.metrics.node), from this machine's /proc.
	f.metricsHave(t, "the shipped and lag metrics", `berth_logs_shipped_records_total{sink="otlp"} 400`+"\n",
		`berth_logs_shipped_records_total{sink="loki"} 400`+"\n", `berth_logs_lag_bytes{path="`+f.logFile+`",sink="loki"} 0`+"\n",
		"node_memory_MemTotal_bytes ", "node_load1 ")
	if resp, err := http.Get("http://" + f.addr + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	}
	stop(cmd, out)
	for _, name := range []string{"otlp", "loki"} {
		fi, err := os.Stat(filepath.Join(f.state, name+".checkpoint.json"))
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

// fixture is where a test runs the shipper: a real VictoriaLogs, the berth-logs binary, a pods' log directory
// with one container's log (logFile), a state directory, and a free port for /metrics.
type fixture struct {
	vl                                       *logbackend.VictoriaLogs
	shipper, dir, root, state, logFile, addr string
}

func newFixture(t *testing.T, podDir string) *fixture {
	t.Helper()
	f := &fixture{vl: logbackend.StartVictoriaLogs(t), shipper: toolbin.Logs(t), dir: t.TempDir()}
	f.root, f.state = filepath.Join(f.dir, "pods"), filepath.Join(f.dir, "state")
	f.logFile = filepath.Join(f.root, podDir, "0.log")
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	f.addr = fmt.Sprintf("127.0.0.1:%d", port)
	return f
}

// run runs `berth-logs run` with config as node-7 until the test ends, when SIGTERM must end it with 0; its output
// is returned.
func (f *fixture) run(t *testing.T, config string) *syncbuf.Buffer {
	t.Helper()
	out := &syncbuf.Buffer{}
	cmd := exec.Command(f.shipper, "run", "-config", config, "-node", "node-7", "-metrics-address", f.addr)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("after SIGTERM: %v\n%s", err, out.String())
		}
	})
	return out
}

// metricsHave waits until the shipper's /metrics has every line of want.
func (f *fixture) metricsHave(t *testing.T, what string, want ...string) {
	t.Helper()
	wait.For(t, 30*time.Second, what, func() bool {
		resp, err := http.Get("http://" + f.addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(string(b), "\n"+w) })
	})
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
