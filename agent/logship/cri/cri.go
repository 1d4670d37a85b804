// Package cri reads the container log format of the CRI (what containerd and CRI-O write under /var/log/pods):
// one record per line, "<RFC 3339 time> <stream> <tag> <content>", where the tag is F (the record ends a line) or
// P (a partial record: the runtime split a line longer than its buffer, 16 KiB in containerd, and the next record
// of the same stream continues it), possibly followed by ":"-separated flags. Parse reads one record; Merger joins
// partial records into lines, up to a cap.
package cri

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Stream is the output a record came from.
type Stream uint8

const (
	Stdout Stream = iota
	Stderr
)

func (s Stream) String() string {
	if s == Stderr {
		return "stderr"
	}
	return "stdout"
}

// Record is one line of a CRI log file. Content aliases the line Parse was given.
type Record struct {
	Time    time.Time
	Stream  Stream
	Partial bool
	Content []byte
}

// Error is a line that is not a CRI record: what is wrong, and the start of the line (at most 64 bytes, quoted).
type Error struct {
	Problem string
	Start   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("not a CRI log record (%s): %s", e.Problem, e.Start)
}

func bad(line []byte, problem string) error {
	const max = 64 // bytes of the line, and characters of their quoted form
	start := line
	if len(start) > max {
		start = start[:max]
	}
	s, cut := fmt.Sprintf("%q", start), len(line) > max
	if len(s) > max+2 {
		s, cut = s[:max+2], true
	}
	if cut {
		s += "…"
	}
	return &Error{Problem: problem, Start: s}
}

// Parse reads one record from line (without its newline; a trailing "\r" is kept as content, as the runtime wrote
// it). The content may be empty.
func Parse(line []byte) (Record, error) {
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return Record{}, bad(line, "no stream after the time")
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return Record{}, bad(line, "the time is not RFC 3339")
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return Record{}, bad(line, "no tag after the stream")
	}
	var r Record
	r.Time = t
	switch string(stream) {
	case "stdout":
		r.Stream = Stdout
	case "stderr":
		r.Stream = Stderr
	default:
		return Record{}, bad(line, "the stream is neither stdout nor stderr")
	}
	tag, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		// "<time> <stream> F" with nothing after it: an empty line, as some runtimes write it.
		tag, content = rest, nil
	}
	first, _, _ := strings.Cut(string(tag), ":")
	switch first {
	case "F":
	case "P":
		r.Partial = true
	default:
		return Record{}, bad(line, "the tag is neither F nor P")
	}
	r.Content = content
	return r, nil
}
