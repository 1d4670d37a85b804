package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/wait"
)

// A changed ConfigMap, as the kubelet writes it into the pod (a new directory, the ..data symlink swapped), while
// the shipper runs: a bad one is refused with every problem named by its field path in the log and counted in
// berth_logs_config_valid / _refused_total, and shipping goes on with the running config; a good one (a second
// sink) restarts the shipper in the same process (no container restart), which ships to both.
func TestConfigChangesWhileRunning(t *testing.T) {
	f := newFixture(t, filepath.Join("demo_hello_0c0c0c0c-0000-0000-0000-000000000000", "web"))
	vl := f.vl
	write := func(from, to int) { logbackend.AppendCRI(t, f.logFile, "reload line %04d", from, to) }
	volume := filepath.Join(f.dir, "volume")
	config := func(rest string) string {
		return fmt.Sprintf("apiVersion: logs.berth.dev/v1alpha1\nkind: LogShipperConfig\nspec:\n  podLogs: {path: %s}\n  stateDir: %s\n  sinks:\n%s", f.root, f.state, rest)
	}
	otlpSink := fmt.Sprintf("  - {name: otlp, type: otlp, url: \"%s/insert/opentelemetry\", batch: {linger: 100ms}}\n", vl.URL)
	lokiSink := fmt.Sprintf("  - {name: loki, type: loki, url: \"%s/insert\", batch: {linger: 100ms}}\n", vl.URL)
	file := configMapUpdate(t, volume, "config.yaml", config(otlpSink))

	out := f.run(t, file)
	metricsHave := func(what string, want ...string) {
		t.Helper()
		for i := range want {
			want[i] += "\n"
		}
		f.metricsHave(t, what, want...)
	}
	write(0, 100)
	vl.Count(t, `"reload line" k8s.pod.name:hello`, 100)
	metricsHave("the running config valid", "berth_logs_config_valid 1")

	// A bad change: a misspelt field and a sink without a URL.
	configMapUpdate(t, volume, "config.yaml", config("  - {name: otlp, type: otlp, batch: {lingr: 1s}}\n"))
	wait.For(t, 30*time.Second, "the refusal in the log", func() bool {
		return strings.Contains(out.String(), "the changed config is refused")
	})
	log := out.String()
	for _, want := range []string{"spec.sinks[0].batch.lingr", "spec.sinks[0].url"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not name %s:\n%s", want, log)
		}
	}
	metricsHave("the refusal counted", "berth_logs_config_valid 0", "berth_logs_config_refused_total 1")
	write(100, 150)
	vl.Count(t, `"reload line" k8s.pod.name:hello`, 150)

	// A good change: a second sink. The same process ships to both; the new sink from the start of the log.
	configMapUpdate(t, volume, "config.yaml", config(otlpSink+lokiSink))
	wait.For(t, 30*time.Second, "the restart in the log", func() bool {
		return strings.Contains(out.String(), "the config changed; restarting with it")
	})
	write(150, 200)
	vl.Count(t, `"reload line" k8s.pod.name:hello`, 200)
	vl.Count(t, `"reload line" pod:hello node:node-7`, 200)
	// The counter starts again at 0: a new program image, in the process this test started (which SIGTERM ends
	// with 0 below).
	metricsHave("the new config valid and running", "berth_logs_config_valid 1", "berth_logs_config_refused_total 0")
}

// configMapUpdate writes content as the kubelet writes a ConfigMap volume's key (its AtomicWriter): into a new
// directory, then ..data swapped to it by rename, the key a symlink through ..data, the old directory removed.
// It returns the key's path.
func configMapUpdate(t *testing.T, volume, key, content string) string {
	t.Helper()
	if err := os.MkdirAll(volume, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(volume, "..data"))
	ts, err := os.MkdirTemp(volume, "..20261203")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, key), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(volume, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(volume, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(volume, key)
	if _, err := os.Lstat(path); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", key), path); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		os.RemoveAll(filepath.Join(volume, old))
	}
	return path
}
