package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/toolbin"
)

// go test -run '^$' -bench ShipVsCollector -benchtime 1x ./agent/cmd/berth-logs (part of make bench)
//
// berth's shipper and the OpenTelemetry Collector's filelog receiver (v0.165, built with its builder) side by side,
// each reading the same container logs in the CRI format and sending OTLP/HTTP protobuf, uncompressed, to the same
// local backend, which decodes every request, counts its records and acknowledges it. berth commits its offsets
// only after the backend's acknowledgement; the collector is measured with acknowledgements on (its exporter's
// queue waits for the result, file storage for offsets) and as it is commonly run (the batch processor and an
// in-memory queue, which answer the receiver before anything is delivered). Reported: lines/s (the wall time
// until the backend holds every line), lines per CPU-second of the shipper's process (user + system), its peak
// RSS (VmHWM: the pages of its binary it touched count, which the kernel can drop), and its peak anonymous memory
// (RssAnon, sampled every 20 ms: what it allocated). The backlog cases read a file written beforehand; the rate case writes 10,000 lines/s for 10 s
// while the shipper follows.
func BenchmarkShipVsCollector(b *testing.B) {
	shipper := toolbin.Logs(b)
	otelcol := filepath.Join(toolbin.OtelCol.ForTest(b), "otelcol")
	shippers := []struct {
		name  string
		start func(b *testing.B, dir, root, url string) *exec.Cmd
	}{
		{"berth", func(b *testing.B, dir, root, url string) *exec.Cmd {
			return startBerth(b, shipper, dir, root, url)
		}},
		{"otelcol-acks", func(b *testing.B, dir, root, url string) *exec.Cmd {
			return startCollector(b, otelcol, dir, root, url, true)
		}},
		{"otelcol-default", func(b *testing.B, dir, root, url string) *exec.Cmd {
			return startCollector(b, otelcol, dir, root, url, false)
		}},
	}
	for _, c := range []struct {
		name        string
		size, lines int
		rate        int // lines per second; 0: a backlog written beforehand
	}{
		{"backlog-100B", 100, 200_000, 0},
		{"backlog-1KiB", 1024, 50_000, 0},
		{"rate-10k-100B", 100, 100_000, 10_000},
	} {
		for _, s := range shippers {
			b.Run(c.name+"/"+s.name, func(b *testing.B) {
				for range b.N {
					dir := b.TempDir()
					root := filepath.Join(dir, "pods")
					logFile := filepath.Join(root, "bench_gen_2c2c2c2c-0000-0000-0000-000000000000", "gen", "0.log")
					if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
						b.Fatal(err)
					}
					backend := logbackend.StartOTLPCounter()
					defer backend.Close()
					if c.rate == 0 {
						logbackend.AppendPadded(b, logFile, 0, c.lines, c.size)
					}
					begin := time.Now()
					cmd := s.start(b, dir, root, backend.URL)
					if c.rate > 0 {
						go func() {
							for i, next := 0, time.Now(); i < c.lines; i += c.rate / 100 {
								logbackend.AppendPadded(b, logFile, i, i+c.rate/100, c.size)
								next = next.Add(10 * time.Millisecond)
								time.Sleep(time.Until(next))
							}
						}()
					}
					// The backend says when it holds every line; meanwhile the shipper's memory is sampled.
					reached := backend.Await(int64(c.lines))
					deadline := time.After(5 * time.Minute)
					sample := time.NewTicker(20 * time.Millisecond)
					var peakAnon int64
				wait:
					for {
						select {
						case <-reached:
							break wait
						case <-deadline:
							b.Fatalf("%s: the backend has %d of %d lines after 5 minutes", s.name, backend.Records.Load(), c.lines)
						case <-sample.C:
							peakAnon = max(peakAnon, statusKB(cmd.Process.Pid, "RssAnon:")<<10)
							if exited(cmd.Process.Pid) {
								b.Fatalf("%s exited with %d of %d lines delivered", s.name, backend.Records.Load(), c.lines)
							}
						}
					}
					sample.Stop()
					elapsed := time.Since(begin)
					cpu, hwm := procUsage(b, cmd.Process.Pid)
					peakAnon = max(peakAnon, statusKB(cmd.Process.Pid, "RssAnon:")<<10)
					cmd.Process.Signal(syscall.SIGTERM)
					cmd.Wait()
					b.ReportMetric(float64(c.lines)/elapsed.Seconds(), "lines/s")
					b.ReportMetric(float64(c.lines)/cpu.Seconds(), "lines/cpu-s")
					b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "cpu-%")
					b.ReportMetric(float64(hwm)/(1<<20), "peak-RSS-MiB")
					b.ReportMetric(float64(peakAnon)/(1<<20), "peak-anon-MiB")
					b.ReportMetric(float64(backend.Requests.Load()), "requests")
				}
			})
		}
	}
}

// startBerth runs `berth-logs run` on root, one OTLP sink to url (batches of 1,000 lines or a second).
func startBerth(b *testing.B, shipper, dir, root, url string) *exec.Cmd {
	config := writeShipperConfig(b, dir, root, filepath.Join(dir, "state"), fmt.Sprintf(`
  sinks:
  - {name: bench, type: otlp, url: %q}
`, url))
	return startProcess(b, dir, shipper, "run", "-config", config, "-node", "bench", "-metrics-address", "", "-kubeconfig", filepath.Join(dir, "none"))
}

// startCollector runs the collector's filelog receiver on root (the container parser: CRI format, the pod's fields
// from the path; offsets in file storage) and its OTLP/HTTP exporter to url, uncompressed. acks: the exporter's
// queue waits for each export's result; otherwise the batch processor and the default in-memory queue.
func startCollector(b *testing.B, otelcol, dir, root, url string, acks bool) *exec.Cmd {
	storage := filepath.Join(dir, "otel-storage")
	if err := os.MkdirAll(storage, 0o700); err != nil {
		b.Fatal(err)
	}
	queue, processors := "{enabled: true, wait_for_result: true, block_on_overflow: true}", "[]"
	if !acks {
		queue, processors = "{enabled: true}", "[batch]"
	}
	config := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`extensions:
  file_storage: {directory: %s}
receivers:
  filelog:
    include: [%s/*/*/*.log]
    start_at: beginning
    storage: file_storage
    operators:
      - type: container
processors:
  batch: {}
exporters:
  otlphttp:
    endpoint: %s
    compression: none
    sending_queue: %s
service:
  extensions: [file_storage]
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
  pipelines:
    logs: {receivers: [filelog], processors: %s, exporters: [otlphttp]}
`, storage, root, url, queue, processors)), 0o600); err != nil {
		b.Fatal(err)
	}
	return startProcess(b, dir, otelcol, "--config", config)
}

func startProcess(b *testing.B, dir, path string, args ...string) *exec.Cmd {
	log, err := os.Create(filepath.Join(dir, filepath.Base(path)+".log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if b.Failed() {
			out, _ := os.ReadFile(log.Name())
			b.Logf("%s's output:\n%s", filepath.Base(path), out)
		}
	})
	return cmd
}

// statusKB is the field of /proc/<pid>/status, in kB (0 if it cannot be read).
func statusKB(pid int, field string) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// exited says whether the child pid has exited (a zombie not yet waited for, or gone).
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	return len(f) == 0 || f[0] == "Z"
}

// procUsage is the process's CPU time (user + system) and peak resident set size in bytes.
func procUsage(b *testing.B, pid int) (time.Duration, int64) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which is in parentheses): state is field 3; utime and stime are 14 and 15.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	hwm := statusKB(pid, "VmHWM:") << 10
	const ticks = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks, hwm
}
