package deliver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"berth.dev/berth/agent/logship/checkpoint"
	"berth.dev/berth/agent/logship/deliver"
	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/esbulk"
	"berth.dev/berth/agent/logship/tail"
	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/wait"
)

type counts struct{ delivered, retried, dead atomic.Int64 }

func (c *counts) Delivered(n int)    { c.delivered.Add(int64(n)) }
func (c *counts) Retried(error)      { c.retried.Add(1) }
func (c *counts) DeadLettered(n int) { c.dead.Add(int64(n)) }

// shipper is the read-batch-deliver loop over one container log, as the logs role runs it.
type shipper struct {
	path  string
	d     *deliver.Deliverer
	f     *tail.Follower
	batch int
}

func newShipper(t *testing.T, path, dir string, s sink.Sink, obs deliver.Observer, batch int) *shipper {
	d, err := deliver.New(deliver.Config{Sink: s, Checkpoint: filepath.Join(dir, "checkpoint.json"),
		DeadLetter: filepath.Join(dir, "dead.ndjson"), Backoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
		Observe: obs, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	f, err := tail.New(tail.Config{Path: path}, d.Position(path))
	if err != nil {
		t.Fatal(err)
	}
	return &shipper{path: path, d: d, f: f, batch: batch}
}

// step reads up to one batch and delivers it; it reports whether there was anything.
func (s *shipper) step(ctx context.Context) (bool, error) {
	var b deliver.Batch
	for len(b.Records) < s.batch {
		read, err := s.f.Poll(64<<10, func(l tail.Line) {
			b.Records = append(b.Records, sink.Record{Time: l.Time, Body: string(l.Content),
				Attrs: []sink.Attr{{Key: "stream", Value: l.Stream.String()}},
				Key:   fmt.Sprintf("%d-%d-%d", l.At.Dev, l.At.Ino, l.At.Offset)})
			b.Commit = checkpoint.Positions{s.path: l.At}
		})
		if err != nil {
			return false, err
		}
		if !read {
			break
		}
	}
	if len(b.Records) == 0 {
		return false, nil
	}
	return true, s.d.Deliver(ctx, b)
}

// Numbered lines, rotated by rename now and then, shipped into a real VictoriaLogs through a backend outage
// (stopped while a batch is being delivered, started again after the shipper retried) and a shipper killed in the
// middle of a delivery and started again from its checkpoint: no line is lost, and no line arrives more often
// than twice (at most the batch in flight at the kill is sent again).
func TestNothingLostThroughOutageAndKill(t *testing.T) {
	const total, batch = 3000, 200
	vl := logbackend.StartVictoriaLogs(t)
	s := esbulk.New(esbulk.Config{Index: "berth", HTTP: sink.HTTP{URL: vl.URL + "/insert/elasticsearch", Client: &http.Client{Timeout: 5 * time.Second},
		Header: http.Header{"VL-Msg-Field": {"message"}, "VL-Time-Field": {"@timestamp"}}}})
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	write := func(from, to int) {
		mu.Lock()
		defer mu.Unlock()
		var b strings.Builder
		for i := from; i < to; i++ {
			fmt.Fprintf(&b, "%s stdout F shipped line %05d\n", time.Now().UTC().Format(time.RFC3339Nano), i)
		}
		if _, err := io.WriteString(out, b.String()); err != nil {
			t.Error(err)
		}
	}
	rotate := func(n int) {
		mu.Lock()
		defer mu.Unlock()
		if err := os.Rename(path, fmt.Sprintf("%s.%04d", path, n)); err != nil {
			t.Fatal(err)
		}
		out.Close()
		if out, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	obs := &counts{}
	state := filepath.Join(dir, "state")
	sh := newShipper(t, path, state, s, obs, batch)
	ctx := context.Background()
	drain := func() {
		t.Helper()
		for {
			more, err := sh.step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !more {
				return
			}
		}
	}

	write(0, 1000)
	rotate(1)
	write(1000, 1200)
	drain()

	// The backend goes away while a batch is in flight; the shipper retries until it is back.
	write(1200, 1700)
	vl.Stop()
	done := make(chan error, 1)
	go func() {
		for {
			more, err := sh.step(ctx)
			if err != nil || !more {
				done <- err
				return
			}
		}
	}()
	retried := obs.retried.Load()
	wait.For(t, 30*time.Second, "two retries while the backend is down", func() bool { return obs.retried.Load() >= retried+2 })
	vl.Start()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Killed in the middle of a delivery: the batch in flight is not committed; a new shipper starts from the
	// checkpoint and sends it again.
	write(1700, 2500)
	rotate(2)
	write(2500, total)
	kctx, kill := context.WithCancel(ctx)
	vl.Stop() // so that the delivery is surely in flight when it is killed
	killed := make(chan error, 1)
	go func() { _, err := sh.step(kctx); killed <- err }()
	retried = obs.retried.Load()
	wait.For(t, 30*time.Second, "the delivery in flight", func() bool { return obs.retried.Load() > retried })
	kill()
	if err := <-killed; err == nil {
		t.Fatal("a killed delivery reported success")
	}
	sh.f.Close()
	vl.Start()
	sh = newShipper(t, path, state, s, obs, batch)
	drain()
	sh.f.Close()

	// Wait until the backend shows every line (it makes new data searchable within about a second); then count.
	var entries []map[string]string
	seen := map[string]int{}
	lost := total
	cond := func() bool {
		entries = vl.Query(t, `"shipped line"`)
		clear(seen)
		for _, e := range entries {
			seen[e["_msg"]]++
		}
		lost = 0
		for i := range total {
			if seen[fmt.Sprintf("shipped line %05d", i)] == 0 {
				lost++
			}
		}
		return lost == 0
	}
	wait.For(t, 30*time.Second, "every line in the backend", cond)
	dup := 0
	for i := range total {
		switch n := seen[fmt.Sprintf("shipped line %05d", i)]; {
		case n > 2:
			t.Errorf("line %d arrived %d times", i, n)
		case n == 2:
			dup++
		}
	}
	if lost > 0 || dup > batch {
		t.Errorf("%d lines lost, %d arrived twice (at most one batch, %d, may)", lost, dup, batch)
	}
	t.Logf("%d lines, %d entries in the backend: %d lost, %d twice; %d retries", total, len(entries), lost, dup, obs.retried.Load())
	if obs.retried.Load() == 0 {
		t.Error("no retry was counted through the outage")
	}
}

// fakeSink answers from a script (a unit test of the delivery logic: what is sent again, what is dead-lettered).
type fakeSink struct {
	answers []error
	sent    [][]string
}

func (f *fakeSink) Name() string { return "fake" }
func (f *fakeSink) Send(_ context.Context, b []sink.Record) error {
	var bodies []string
	for _, r := range b {
		bodies = append(bodies, string(r.Body))
	}
	f.sent = append(f.sent, bodies)
	if len(f.answers) == 0 {
		return nil
	}
	a := f.answers[0]
	f.answers = f.answers[1:]
	return a
}

// A batch partly refused: the refused record goes to the dead-letter file with its reason, the one to send again
// is sent again alone, a whole-batch failure resends what is left, and the commit comes after the last answer.
func TestPartialAnswers(t *testing.T) {
	dir := t.TempDir()
	f := &fakeSink{answers: []error{
		&sink.Error{Sink: "fake", Rejected: map[int]string{1: "status 400: mapper_parsing_exception"}, Again: []int{2}, Err: fmt.Errorf("some")},
		sink.Transient("fake", fmt.Errorf("connection refused")),
	}}
	obs := &counts{}
	d, err := deliver.New(deliver.Config{Sink: f, Checkpoint: filepath.Join(dir, "cp.json"), DeadLetter: filepath.Join(dir, "dead.ndjson"),
		Backoff: time.Millisecond, Observe: obs, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var recs []sink.Record
	for _, b := range []string{"a", "b", "c"} {
		recs = append(recs, sink.Record{Body: b, Key: "k-" + b})
	}
	at := tail.Position{Path: "/p/0.log", Offset: 99}
	if err := d.Deliver(context.Background(), deliver.Batch{Records: recs, Commit: checkpoint.Positions{"/p/0.log": at}}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(f.sent) != "[[a b c] [c] [c]]" {
		t.Errorf("sent %v", f.sent)
	}
	dead, err := os.ReadFile(filepath.Join(dir, "dead.ndjson"))
	if err != nil || strings.Count(string(dead), "\n") != 1 || !strings.Contains(string(dead), `"body":"b"`) || !strings.Contains(string(dead), "mapper_parsing_exception") {
		t.Errorf("dead letters %q, %v", dead, err)
	}
	if obs.delivered.Load() != 2 || obs.dead.Load() != 1 || obs.retried.Load() != 2 {
		t.Errorf("delivered %d, dead %d, retried %d; want 2, 1, 2", obs.delivered.Load(), obs.dead.Load(), obs.retried.Load())
	}
	c, err := checkpoint.Load(filepath.Join(dir, "cp.json"))
	if err != nil || c.Positions["/p/0.log"].Offset != 99 {
		t.Errorf("committed %+v, %v", c, err)
	}
	// A cancelled delivery commits nothing.
	f.answers = []error{sink.Transient("fake", fmt.Errorf("down"))}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Deliver(ctx, deliver.Batch{Records: recs, Commit: checkpoint.Positions{"/p/0.log": {Offset: 200}}}); err == nil {
		t.Error("a cancelled delivery succeeded")
	}
	if p := d.Position("/p/0.log"); p == nil || p.Offset != 99 {
		t.Errorf("after a cancelled delivery the position is %+v; want 99", p)
	}
}
