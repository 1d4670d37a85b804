package tail

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/wait"
)

// producer writes numbered lines to dir/0.log as containerd does (a record per line; every seventh line split into
// partial records), and rotates the file as the kubelet does (rename, then the runtime reopens the path a few
// lines later; older rotated files gzipped) or as logrotate's copytruncate does (copy, then truncate; the writer
// paused in between, so that the rotator itself loses nothing).
type producer struct {
	mu   sync.Mutex
	dir  string
	f    *os.File
	seq  int
	want []string // every line's content, in order
	// closed[k] is how many lines had been written when rotated file k stopped growing; delivered is the
	// consumer's count (copytruncate waits on it).
	closed    map[int]int
	delivered *atomic.Int64
	stop      chan struct{} // closed when the test ends
	progress  chan struct{} // poked (never blocking) whenever delivered grows
}

func (p *producer) path() string { return filepath.Join(p.dir, "0.log") }

func (p *producer) open(t *testing.T) {
	f, err := os.OpenFile(p.path(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Error(err)
		return
	}
	p.f = f
}

func (p *producer) line(t *testing.T, i int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	content := fmt.Sprintf("line %06d %s", i, strings.Repeat("x", i%50))
	var recs string
	if i%7 == 0 {
		content += strings.Repeat("y", 300)
		a, b := content[:100], content[100:250]
		recs = ts + " stdout P " + a + "\n" + ts + " stdout P " + b + "\n" + ts + " stdout F " + content[250:] + "\n"
	} else {
		recs = ts + " stdout F " + content + "\n"
	}
	if _, err := io.WriteString(p.f, recs); err != nil {
		t.Error(err)
	}
	p.want = append(p.want, content)
}

// renameRotate is the kubelet's rotation: the path is renamed, the runtime keeps writing to the renamed file for a
// while (lines more lines), then reopens the path; the rotated file before the last one is compressed as the
// kubelet does it (gzip into <file>.tmp, renamed to <file>.gz, the file removed), whether or not the consumer has
// read it yet.
func (p *producer) renameRotate(t *testing.T, next *int, lines int) {
	p.mu.Lock()
	p.seq++
	rotated := fmt.Sprintf("%s.%04d", p.path(), p.seq)
	if err := os.Rename(p.path(), rotated); err != nil {
		t.Error(err)
	}
	p.mu.Unlock()
	for range lines {
		p.line(t, *next)
		*next++
	}
	p.mu.Lock()
	p.f.Close()
	p.open(t)
	p.closed[p.seq] = len(p.want)
	prev := fmt.Sprintf("%s.%04d", p.path(), p.seq-1)
	p.mu.Unlock()
	if p.seq > 1 {
		compress(t, prev)
	}
}

// compress is the kubelet's compression of a rotated log.
func compress(t *testing.T, path string) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return // a copytruncate's copy, already compressed
	}
	if err != nil {
		t.Error(err)
		return
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	if err := os.WriteFile(path+".tmp", b.Bytes(), 0o600); err != nil {
		t.Error(err)
	}
	if err := os.Rename(path+".tmp", path+".gz"); err != nil {
		t.Error(err)
	}
	if err := os.Remove(path); err != nil {
		t.Error(err)
	}
}

// caughtUp waits until the consumer delivered upTo lines (false, and the test failed, if it does not in 20 s;
// false as well once the test is over).
func (p *producer) caughtUp(t *testing.T, upTo int) bool {
	deadline := time.After(20 * time.Second)
	for p.delivered.Load() < int64(upTo) {
		select {
		case <-p.progress: // the consumer delivered more
		case <-p.stop:
			return false
		case <-deadline:
			t.Errorf("the consumer never delivered line %d", upTo)
			return false
		}
	}
	return true
}

// copyTruncate is logrotate's copytruncate, with the writer paused. A reader that lags by more than a rotation
// loses lines with copytruncate (the copy before the last is not looked for), so it waits for the consumer to have
// delivered the previous rotated file and the start of this one.
func (p *producer) copyTruncate(t *testing.T) {
	p.mu.Lock()
	upTo := p.closed[p.seq] + 1 // and a line of this file: a file truncated before any of it was read looks untouched
	p.mu.Unlock()
	if !p.caughtUp(t, upTo) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seq++
	data, err := os.ReadFile(p.path())
	if err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(fmt.Sprintf("%s.%04d", p.path(), p.seq), data, 0o600); err != nil {
		t.Error(err)
	}
	if err := p.f.Truncate(0); err != nil {
		t.Error(err)
	}
	p.closed[p.seq] = len(p.want)
}

// Lines written through both kinds of rotation, read by a follower that is "killed" now and then and started again
// from the last position it delivered: every line arrives, whole (partial records merged), in order after its
// predecessor's last delivery, and a restart repeats at most the lines since the last delivery.
func TestFollowThroughRotationAndRestarts(t *testing.T) {
	const total, batch = 6000, 100
	var delivered []string
	p := &producer{dir: t.TempDir(), closed: map[int]int{}, delivered: &atomic.Int64{}, stop: make(chan struct{}), progress: make(chan struct{}, 1)}
	p.open(t)
	done := make(chan struct{})
	t.Cleanup(func() { close(p.stop); <-done })
	go func() {
		defer close(done)
		rng := rand.New(rand.NewPCG(7, 7))
		for i := 0; i < total; {
			select {
			case <-p.stop:
				return
			default:
			}
			p.line(t, i)
			i++
			switch {
			case i%500 == 0:
				p.renameRotate(t, &i, rng.IntN(5))
			case i%500 == 250:
				p.copyTruncate(t)
			}
			if i%50 == 0 && !p.caughtUp(t, i-200) {
				return // the follower may lag by up to 200 lines, so rotations happen under it
			}
		}
	}()

	var pending []Line
	var saved *Position
	restarts, dups := 0, 0
	var trace bytes.Buffer
	var traceMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&traceMu, &trace}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	defer func() {
		if t.Failed() {
			traceMu.Lock()
			t.Logf("the follower's moves:\n%s", trace.String())
			traceMu.Unlock()
		}
	}()
	cfg := Config{Path: p.path(), ReadSize: 4096, Log: log}
	f, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	deliver := func() {
		for _, l := range pending {
			delivered = append(delivered, string(l.Content))
		}
		if len(pending) > 0 {
			at := pending[len(pending)-1].At
			saved = &at
		}
		pending = pending[:0]
		p.delivered.Store(int64(len(delivered)))
		select {
		case p.progress <- struct{}{}:
		default:
		}
	}
	wait.For(t, 60*time.Second, "every line delivered", func() bool {
		for {
			read, err := f.Poll(8192, func(l Line) {
				if l.Malformed || l.Split {
					t.Fatalf("line %q: malformed %v, split %v", l.Content, l.Malformed, l.Split)
				}
				l.Content = []byte(string(l.Content))
				pending = append(pending, l)
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(pending) >= batch || !read {
				deliver()
			}
			if rng.IntN(20) == 0 { // killed: what was read and not delivered is read again
				f.Close()
				restarts++
				dups += len(pending)
				pending = pending[:0]
				if f, err = New(cfg, saved); err != nil {
					t.Fatal(err)
				}
			}
			if !read {
				break
			}
		}
		select {
		case <-done:
			return len(delivered) >= len(p.want)
		default:
			return false
		}
	})
	f.Close()
	<-done
	p.mu.Lock()
	defer p.mu.Unlock()
	if restarts == 0 {
		t.Fatal("the follower was never restarted")
	}
	for i, want := range p.want {
		if i >= len(delivered) || delivered[i] != want {
			got := "nothing"
			if i < len(delivered) {
				got = delivered[i]
			}
			t.Fatalf("line %d: delivered %.40q, want %.40q (%d restarts)", i, got, want, restarts)
		}
	}
	if len(delivered) != len(p.want) {
		t.Errorf("%d lines delivered, %d written", len(delivered), len(p.want))
	}
	t.Logf("%d lines, %d rotations, %d restarts, %d lines read again after a restart", len(p.want), p.seq, restarts, dups)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// Bad content: a line that is not a CRI record, binary garbage and a line longer than the cap with no newline yet
// come out as malformed lines (cut at the cap), the good lines around them as they are, and positions never go
// back. A file replaced under the same name is read from its start.
func TestMalformedAndReplaced(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	long := strings.Repeat("z", 3000)
	content := "2026-12-03T10:00:00Z stdout F first\n" +
		"not a record\n" +
		"\x00\x01\x02\xff\n" +
		"2026-12-03T10:00:01Z stderr F second\n" +
		long
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Path: path, MaxLine: 1000, ReadSize: 512}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []string
	var last int64
	poll := func() {
		t.Helper()
		for {
			read, err := f.Poll(0, func(l Line) {
				if l.At.Offset < last {
					t.Errorf("position went back from %d to %d", last, l.At.Offset)
				}
				last = l.At.Offset
				got = append(got, fmt.Sprintf("%v:%d:%.12s", l.Malformed, len(l.Content), l.Content))
			})
			if err != nil {
				t.Fatal(err)
			}
			if !read {
				return
			}
		}
	}
	poll()
	want := []string{"false:5:first", "true:12:not a record", "true:4:\x00\x01\x02\xff", "false:6:second", "true:1256:zzzzzzzzzzzz", "true:1256:zzzzzzzzzzzz"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// The same name, a new file (written elsewhere and renamed over it, as an editor does): read from its start.
	tmp := filepath.Join(dir, "new")
	if err := os.WriteFile(tmp, []byte("2026-12-03T11:00:00Z stdout F again\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	got, last = nil, 0
	poll()
	poll() // the second poll at the end of the old file moves on
	poll()
	if fmt.Sprint(got) != fmt.Sprint([]string{"false:5:again"}) {
		t.Errorf("after the replacement: %q", got)
	}
}

// Identity: the same inode with more of its head is the same file; a truncated or rewritten one is not; a copy with
// a full head matches only by Copy.
func TestIdentity(t *testing.T) {
	head := []byte(strings.Repeat("h", HeadSize))
	a := Identity{Dev: 1, Ino: 2, Head: head[:10]}
	if !a.Same(Identity{Dev: 1, Ino: 2, Head: head}) {
		t.Error("a grown file is not the same")
	}
	if a.Same(Identity{Dev: 1, Ino: 2, Head: []byte("other")}) || a.Same(Identity{Dev: 1, Ino: 2}) {
		t.Error("a rewritten or truncated file is the same")
	}
	full := Identity{Dev: 1, Ino: 2, Head: head}
	if !full.Copy(Identity{Dev: 1, Ino: 3, Head: head}) || full.Copy(full) || a.Copy(Identity{Dev: 1, Ino: 3, Head: head[:10]}) {
		t.Error("Copy")
	}
	if short := (Identity{Dev: 1, Ino: 2, Head: head[:60]}); !short.Copy(Identity{Dev: 1, Ino: 3, Head: head}) {
		t.Error("a copy of a file read when it had one short line is not found")
	}
}

// A follower away while its file was rotated twice and the kubelet compressed the older rotated file: started
// again from its position, it reads the rest of that file from the .gz, then the next rotated file, then the
// path; stopped again inside the .gz, it goes on there. Every line once, in order.
func TestReadsCompressedRotations(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	write := func(from, to int) { logbackend.AppendCRI(t, path, "line %04d xxxxxxxx", from, to) }
	var got []string
	var at *Position
	// read takes n lines (all there are if n < 0) with a new follower from at, as a restarted shipper does.
	read := func(n int) {
		t.Helper()
		f, err := New(Config{Path: path, ReadSize: 256}, at)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for taken := 0; n < 0 || taken < n; {
			read, err := f.Poll(0, func(l Line) {
				if n >= 0 && taken >= n {
					return // read, not delivered: the next follower reads it again
				}
				got = append(got, string(l.Content[:9]))
				pos := l.At
				at = &pos
				taken++
			})
			if err != nil {
				t.Fatal(err)
			}
			if !read && n < 0 {
				// Twice at the end: a rotated file is left only after a second empty poll.
				if read, _ = f.Poll(0, func(Line) {}); !read {
					return
				}
			}
		}
	}
	write(0, 100)
	read(30)
	os.Rename(path, path+".0001")
	write(100, 200)
	os.Rename(path, path+".0002")
	write(200, 300)
	compress(t, path+".0001")
	read(40) // to line 69, inside 0.log.0001.gz
	if !strings.HasSuffix(at.Path, ".0001.gz") {
		t.Errorf("position %+v, want one in 0.log.0001.gz", at)
	}
	compress(t, path+".0002")
	read(-1)
	if len(got) != 300 {
		t.Fatalf("%d lines, want 300: %q", len(got), got)
	}
	for i, l := range got {
		if want := fmt.Sprintf("line %04d", i); l != want {
			t.Fatalf("line %d is %q, want %q", i, l, want)
		}
	}
}

// A compressed rotated file cut short (or not gzip at all) is read as far as it goes, with a warning, and the
// files after it are read: no error, no stall.
func TestCorruptCompressedRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "0.log")
	write := func(from, to int) { logbackend.AppendCRI(t, path, "line %04d "+strings.Repeat("x", 200), from, to) }
	write(0, 100)
	f, err := New(Config{Path: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var at Position
	f.Poll(0, func(l Line) {
		if at.Offset == 0 {
			at = l.At // after line 0
		}
	})
	f.Close()
	os.Rename(path, path+".0001")
	write(100, 150)
	os.Rename(path, path+".0002")
	os.WriteFile(path+".0002.gz", []byte("not gzip at all, and long enough to have a trailer"), 0o600)
	os.Remove(path + ".0002")
	write(150, 200)
	compress(t, path+".0001")
	gz, _ := os.ReadFile(path + ".0001.gz")
	os.WriteFile(path+".0001.gz", gz[:len(gz)/2], 0o600)

	var warnings bytes.Buffer
	f, err = New(Config{Path: path, Log: slog.New(slog.NewTextHandler(&warnings, nil))}, &at)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []int
	for range 10 {
		if _, err := f.Poll(0, func(l Line) {
			var i int
			fmt.Sscanf(string(l.Content), "line %d", &i)
			if !l.Malformed {
				got = append(got, i)
			}
		}); err != nil {
			t.Fatalf("poll: %v", err)
		}
	}
	if len(got) < 60 || got[0] != 1 || got[len(got)-1] != 199 || slices.Contains(got, 120) || !slices.IsSorted(got) {
		t.Errorf("lines %v: want 1 onwards while the cut file lasts, then 150 to 199", got)
	}
	for _, want := range []string{"0.log.0001.gz after", "0.log.0002.gz"} {
		if !strings.Contains(warnings.String(), want) {
			t.Errorf("no warning naming %s:\n%s", want, warnings.String())
		}
	}
}
