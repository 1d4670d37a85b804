package cri

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	when := time.Date(2026, 12, 3, 10, 0, 0, 123456789, time.UTC)
	for line, want := range map[string]Record{
		"2026-12-03T10:00:00.123456789Z stdout F hello world":     {when, Stdout, false, []byte("hello world")},
		"2026-12-03T10:00:00.123456789Z stderr P part ":           {when, Stderr, true, []byte("part ")},
		"2026-12-03T10:00:00.123456789Z stdout F ":                {when, Stdout, false, nil},
		"2026-12-03T10:00:00.123456789Z stdout F":                 {when, Stdout, false, nil},
		"2026-12-03T10:00:00.123456789Z stdout F:x  two  spaces ": {when, Stdout, false, []byte(" two  spaces ")},
		"2026-12-03T11:00:00.123456789+01:00 stdout F zone":       {when, Stdout, false, []byte("zone")},
	} {
		r, err := Parse([]byte(line))
		if err != nil {
			t.Errorf("%q: %v", line, err)
			continue
		}
		if !r.Time.Equal(want.Time) || r.Stream != want.Stream || r.Partial != want.Partial || !bytes.Equal(r.Content, want.Content) {
			t.Errorf("%q: %+v, want %+v", line, r, want)
		}
	}
	for line, problem := range map[string]string{
		"":                                "no stream",
		"hello":                           "no stream",
		"yesterday stdout F x":            "time",
		"2026-12-03T10:00:00Z":            "no stream",
		"2026-12-03T10:00:00Z stdout":     "no tag",
		"2026-12-03T10:00:00Z stdin F x":  "stream",
		"2026-12-03T10:00:00Z stdout X x": "tag",
		"2026-12-03T10:00:00Z stdout " + "\x00\x01": "tag",
		strings.Repeat("\xff", 200):                 "no stream",
	} {
		_, err := Parse([]byte(line))
		var e *Error
		if !errors.As(err, &e) || !strings.Contains(e.Problem, problem) {
			t.Errorf("%q: %v; want a problem with %q", line, err, problem)
		}
		if e != nil && len(e.Start) > 80 {
			t.Errorf("%q: the error quotes %d bytes of the line", line, len(e.Start))
		}
	}
}

// lines runs records (one file, each record a line of the given length) through a Merger and returns what it
// emitted.
func merge(m *Merger, recs []Record) []Line {
	var out []Line
	emit := func(l Line) {
		l.Content = bytes.Clone(l.Content)
		out = append(out, l)
	}
	var off int64
	for _, r := range recs {
		size := int64(len(r.Content) + 40)
		m.Add(r, off, off+size, emit)
		off += size
	}
	m.Flush(off, emit)
	return out
}

func TestMergerJoinsPartialsPerStream(t *testing.T) {
	rec := func(s Stream, partial bool, c string) Record {
		return Record{Stream: s, Partial: partial, Content: []byte(c)}
	}
	got := merge(&Merger{Max: 8}, []Record{
		rec(Stdout, true, "hel"), rec(Stderr, false, "err"), rec(Stdout, false, "lo"),
		rec(Stdout, true, "0123456"), rec(Stdout, false, "789abcdefghij"), rec(Stderr, true, "tail"),
	})
	var s []string
	for _, l := range got {
		s = append(s, fmt.Sprintf("%s:%s:%v:%d", l.Stream, l.Content, l.Split, l.Commit))
	}
	// Offsets: hel [0,43) err [43,86) lo [86,128) 0123456 [128,175) 789abcdefghij [175,228) tail [228,272).
	want := "stderr:err:false:0 stdout:hello:false:128 stdout:01234567:true:175 stdout:89abcdef:true:175 stdout:ghij:false:228 stderr:tail:true:272"
	if strings.Join(s, " ") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(s, " "), want)
	}
}

// Whatever the records, the merger loses and reorders nothing within a stream, never emits more than Max, and its
// commits never go back.
func TestMergerKeepsEverything(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		m := &Merger{Max: 1 + rng.IntN(64)}
		var recs []Record
		var sent [2]bytes.Buffer
		for i := range rng.IntN(40) {
			c := []byte(strings.Repeat(string(rune('a'+i%26)), rng.IntN(100)))
			s := Stream(rng.IntN(2))
			recs = append(recs, Record{Stream: s, Partial: rng.IntN(3) > 0, Content: c})
			sent[s].Write(c)
		}
		var got [2]bytes.Buffer
		var last int64
		for _, l := range merge(m, recs) {
			if len(l.Content) > m.Max {
				t.Fatalf("round %d: a line of %d bytes; the cap is %d", round, len(l.Content), m.Max)
			}
			if l.Commit < last {
				t.Fatalf("round %d: commit went back from %d to %d", round, last, l.Commit)
			}
			last = l.Commit
			got[l.Stream].Write(l.Content)
		}
		for s := range got {
			if !bytes.Equal(got[s].Bytes(), sent[s].Bytes()) {
				t.Fatalf("round %d, %s: got %q, sent %q", round, Stream(s), got[s].Bytes(), sent[s].Bytes())
			}
		}
	}
}

// go test -fuzz FuzzParse ./agent/logship/cri: a line either is refused with an Error or parses to a record that,
// written back in the CRI format, parses to the same record.
func FuzzParse(f *testing.F) {
	f.Add([]byte("2026-12-03T10:00:00.123456789Z stdout F hello world"))
	f.Add([]byte("2026-12-03T10:00:00Z stderr P:x "))
	f.Add([]byte("2026-12-03T10:00:00+01:00 stdout F"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := Parse(line)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("an error that is not an *Error: %v", err)
			}
			return
		}
		tag := "F"
		if r.Partial {
			tag = "P"
		}
		again, err := Parse([]byte(r.Time.Format(time.RFC3339Nano) + " " + r.Stream.String() + " " + tag + " " + string(r.Content)))
		if err != nil || !again.Time.Equal(r.Time) || again.Stream != r.Stream || again.Partial != r.Partial || !bytes.Equal(again.Content, r.Content) {
			t.Fatalf("round trip: %+v became %+v (%v)", r, again, err)
		}
	})
}
