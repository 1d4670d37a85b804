package cri

import "time"

// DefaultMaxLine is the merged line cap Merger uses when Max is 0: 64 times containerd's 16 KiB record.
const DefaultMaxLine = 1 << 20

// Line is a whole line of a container's output: its records joined.
type Line struct {
	// Time is the first record's.
	Time   time.Time
	Stream Stream
	// Content is the merger's until the next call to Add or Flush: copy what must outlive it.
	Content []byte
	// Split says the line was longer than the cap: this is one piece, and the next Line of its stream continues it.
	Split bool
	// Commit is the offset in the file up to which every record is in this line or an earlier one: where reading
	// starts again once this line is delivered. It is behind the line's own end while a partial record of either
	// stream, or the rest of a split one, is still pending.
	Commit int64
}

// Merger joins partial records into lines, per stream, up to Max bytes. It is fed the records of one file in order.
type Merger struct {
	Max     int
	pending [2]pending
}

type pending struct {
	buf   []byte
	time  time.Time
	start int64 // offset of the first record with content in buf; -1: nothing pending
	open  bool
}

// Add takes record r, which starts at offset start and ends (after its newline) at end, and calls emit for each
// line it completes (none, for a partial record that fits; several, for a record that crosses the cap twice).
func (m *Merger) Add(r Record, start, end int64, emit func(Line)) {
	max := m.Max
	if max <= 0 {
		max = DefaultMaxLine
	}
	p := &m.pending[r.Stream]
	if !p.open {
		p.open, p.time, p.start, p.buf = true, r.Time, start, p.buf[:0]
	}
	content := r.Content
	for len(p.buf)+len(content) > max {
		n := max - len(p.buf)
		p.buf = append(p.buf, content[:n]...)
		content = content[n:]
		// The rest of this record is still to come: reading again from its start repeats the piece, never loses it.
		emit(Line{Time: p.time, Stream: r.Stream, Content: p.buf, Split: true, Commit: m.commit(r.Stream, start)})
		p.buf, p.time, p.start = p.buf[:0], r.Time, start
	}
	p.buf = append(p.buf, content...)
	if r.Partial {
		return
	}
	p.open = false
	emit(Line{Time: p.time, Stream: r.Stream, Content: p.buf, Commit: m.commit(r.Stream, end)})
}

// commit is upTo, or the start of the other stream's pending line if that is earlier (and of this stream's, when
// upTo is where its rest starts).
func (m *Merger) commit(s Stream, upTo int64) int64 {
	if o := &m.pending[1-s]; o.open && o.start < upTo {
		return o.start
	}
	return upTo
}

// Pending reports whether a partial line is waiting for its end, and the offset its first record starts at.
func (m *Merger) Pending() (int64, bool) {
	var at int64 = -1
	for _, p := range m.pending {
		if p.open && (at < 0 || p.start < at) {
			at = p.start
		}
	}
	return at, at >= 0
}

// Flush emits what is pending as lines (a file that ended in the middle of a line: the runtime will not finish it),
// each marked Split, and forgets it. end is where the file ends.
func (m *Merger) Flush(end int64, emit func(Line)) {
	for s := range m.pending {
		p := &m.pending[s]
		if !p.open {
			continue
		}
		p.open = false
		emit(Line{Time: p.time, Stream: Stream(s), Content: p.buf, Split: true, Commit: m.commit(Stream(s), end)})
	}
}
