package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"berth.dev/berth/test/wait"
)

// The shipper binary under load, everything at once: a producer writes numbered lines in the CRI format as a
// runtime does (every 97th line 40 KiB, split into 16 KiB partial records) while the log is rotated every second,
// the kubelet's way (rename, the runtime reopens) and the copytruncate way by turns; the shipper is SIGKILLed twice
// and restarted, and the backend is stopped while 5,000 lines are written and brought back. Every line arrives whole in the
// real VictoriaLogs; it reports lines lost (must be 0) and duplicated (at most one batch per kill or outage).
func TestNothingLostUnderLoad(t *testing.T) {
	f := newFixture(t, filepath.Join("load_loadgen_1b1b1b1b-0000-0000-0000-000000000000", "gen"))
	vl, shipper, dir, root, state, logFile := f.vl, f.shipper, f.dir, f.root, f.state, f.logFile
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		t.Fatal(err)
	}
	const batch = 500
	config := writeShipperConfig(t, dir, root, state, fmt.Sprintf(`
  sinks:
  - {name: otlp, type: otlp, url: "%s/insert/opentelemetry", batch: {records: %d, linger: 100ms}, retry: {initial: 100ms, max: 1s}}
`, vl.URL, batch))
	var mu sync.Mutex
	var cmd *exec.Cmd
	var out strings.Builder
	start := func() {
		mu.Lock()
		defer mu.Unlock()
		cmd = exec.Command(shipper, "run", "-config", config, "-node", "node-1", "-metrics-address", "")
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	kill := func() {
		mu.Lock()
		defer mu.Unlock()
		cmd.Process.Kill()
		cmd.Wait()
	}
	t.Cleanup(func() {
		kill()
		if t.Failed() {
			t.Logf("shipper output:\n%s", out.String())
		}
	})

	const lines = 30000
	long := strings.Repeat("y", 40<<10)
	var written atomic.Int64
	produced := make(chan int, 1)
	go func() { produced <- produce(t, logFile, lines, long, &written) }()
	start()
	// The disturbances, at points of the producer's progress (it writes for about ten seconds): a kill, an outage
	// while 5,000 lines are written, another kill.
	reached := func(n int64) {
		t.Helper()
		wait.For(t, time.Minute, fmt.Sprintf("the producer at line %d", n), func() bool { return written.Load() >= n })
	}
	reached(6000)
	kill()
	start()
	reached(12000)
	vl.Stop()
	reached(17000)
	vl.Start()
	reached(22000)
	kill()
	start()
	rotations := <-produced

	var got []map[string]string
	wait.For(t, 3*time.Minute, fmt.Sprintf("the %d lines in VictoriaLogs", lines), func() bool {
		got = vl.Query(t, `k8s.pod.name:=loadgen | fields _msg`)
		return len(got) >= lines
	})
	seen := make([]int, lines)
	for _, e := range got {
		var i int
		if _, err := fmt.Sscanf(e["_msg"], "load %d", &i); err != nil || i < 0 || i >= lines {
			t.Fatalf("an entry that is no line of the producer: %.80q", e["_msg"])
		}
		if want := line(i, long); e["_msg"] != want {
			t.Errorf("line %d: %d bytes, want %d", i, len(e["_msg"]), len(want))
		}
		seen[i]++
	}
	lost, dup := 0, 0
	for _, n := range seen {
		if n == 0 {
			lost++
		}
		if n > 1 {
			dup += n - 1
		}
	}
	t.Logf("%d lines, %d rotations, 2 kills, an outage over 5,000 lines: %d lost, %d duplicated", lines, rotations, lost, dup)
	if lost != 0 || dup > 3*batch {
		t.Errorf("%d lines lost, %d duplicated; want none lost and at most one batch (%d) per kill or outage", lost, dup, batch)
	}
}

// line is the producer's line i: "load <i>", and every 97th a long one.
func line(i int, long string) string {
	if i%97 == 0 {
		return fmt.Sprintf("load %d %s", i, long)
	}
	return fmt.Sprintf("load %d", i)
}

// produce writes n numbered lines to path in the CRI format at about 3,000 a second, rotating the file every second
// (by rename, as the kubelet does, and by copytruncate, by turns), counts them in written as it goes, and returns
// how many rotations it made.
func produce(t *testing.T, path string, n int, long string, written *atomic.Int64) int {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer func() { f.Close() }()
	rotations, last := 0, time.Now()
	for i := range n {
		msg := line(i, long)
		ts := time.Now().UTC().Format(time.RFC3339Nano)
		var b strings.Builder
		for len(msg) > 16<<10 { // the runtime's 16 KiB records, P(artial) until the last
			fmt.Fprintf(&b, "%s stdout P %s\n", ts, msg[:16<<10])
			msg = msg[16<<10:]
		}
		fmt.Fprintf(&b, "%s stdout F %s\n", ts, msg)
		if _, err := f.WriteString(b.String()); err != nil {
			t.Error(err)
			return rotations
		}
		written.Store(int64(i + 1))
		if i%30 == 29 {
			time.Sleep(10 * time.Millisecond)
		}
		if time.Since(last) < time.Second {
			continue
		}
		last = time.Now()
		rotated := fmt.Sprintf("%s.%s-%03d", path, last.UTC().Format("20060102-150405"), rotations)
		if rotations%2 == 0 {
			if err := os.Rename(path, rotated); err != nil {
				t.Error(err)
				return rotations
			}
			f.Close()
			if f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640); err != nil {
				t.Error(err)
				return rotations
			}
		} else if err := copyTruncate(path, rotated); err != nil {
			t.Error(err)
			return rotations
		}
		rotations++
	}
	return rotations
}

// copyTruncate copies path to to, then truncates path (the writer keeps its O_APPEND descriptor).
func copyTruncate(path, to string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Truncate(path, 0)
}
