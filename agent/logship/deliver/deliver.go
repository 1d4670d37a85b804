// Package deliver hands batches of records to one sink until the sink took every one, and only then commits how
// far the batch reached (the checkpoint): at least once. Transient failures (the backend down, 429, 5xx) are
// retried for as long as it takes, with jittered exponential backoff, and while a batch is retried no other batch
// is read, so memory stays bounded and the log files are the buffer. Records the backend refuses for good go to a
// dead-letter file, with the reason, and are counted; they never block the records after them.
package deliver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"berth.dev/berth/agent/logship/checkpoint"
	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/tail"
)

// Batch is records read together and, per followed log, the position reached once all of them are delivered (and
// the journal's cursor, if journal entries are among them).
type Batch struct {
	Records       []sink.Record
	Commit        checkpoint.Positions
	JournalCursor string
}

// Config is one sink's delivery.
type Config struct {
	Sink sink.Sink
	// Checkpoint is the file of this sink's positions; DeadLetter the file refused records are appended to.
	Checkpoint, DeadLetter string
	// Backoff is the first retry's delay (default 500 ms), doubled per failure up to MaxBackoff (default 30 s);
	// each delay is jittered to between half and all of it.
	Backoff, MaxBackoff time.Duration
	// Observe, if set, is told what happens (metrics).
	Observe Observer
	Log     *slog.Logger
}

// Observer counts what delivery does.
type Observer interface {
	Delivered(records int)
	Retried(err error)
	DeadLettered(records int)
}

// Deliverer delivers batches to one sink, one at a time.
type Deliverer struct {
	cfg       Config
	committed checkpoint.Checkpoint
	rng       *rand.Rand
}

// New loads the sink's checkpoint (its positions say where reading starts again).
func New(cfg Config) (*Deliverer, error) {
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c, err := checkpoint.Load(cfg.Checkpoint)
	if err != nil {
		return nil, err
	}
	return &Deliverer{cfg: cfg, committed: c, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))}, nil
}

// Positions are the positions committed so far (a copy).
func (d *Deliverer) Positions() checkpoint.Positions { return maps.Clone(d.committed.Positions) }

// JournalCursor is the cursor of the last journal entry delivered ("": none).
func (d *Deliverer) JournalCursor() string { return d.committed.JournalCursor }

// Position is where reading the log at path starts again (nil: from its start).
func (d *Deliverer) Position(path string) *tail.Position {
	if p, ok := d.committed.Positions[path]; ok {
		return &p
	}
	return nil
}

// Deliver sends b until the sink has taken or refused for good every record, then commits b.Commit. It returns
// only when that is done, or with ctx's error (nothing of b committed).
func (d *Deliverer) Deliver(ctx context.Context, b Batch) error {
	pending := b.Records
	failures := 0
	for len(pending) > 0 {
		err := d.cfg.Sink.Send(ctx, pending)
		if err == nil {
			d.delivered(len(pending))
			break
		}
		var e *sink.Error
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case sink.IsRetry(err):
			// The whole batch again.
		case errors.As(err, &e):
			if err := d.deadLetter(pending, e.Rejected); err != nil {
				return err
			}
			if e.Dropped > 0 {
				if err := d.dropped(e.Dropped, e.Err); err != nil {
					return err
				}
			}
			d.delivered(len(pending) - len(e.Rejected) - len(e.Again) - e.Dropped)
			again := make([]sink.Record, 0, len(e.Again))
			for _, i := range e.Again {
				if i >= 0 && i < len(pending) {
					again = append(again, pending[i])
				}
			}
			pending = again
			if len(pending) == 0 {
				continue
			}
		}
		if d.cfg.Observe != nil {
			d.cfg.Observe.Retried(err)
		}
		delay := d.delay(failures, err)
		failures++
		d.cfg.Log.Warn("delivery failed; retrying", "sink", d.cfg.Sink.Name(), "records", len(pending), "in", delay.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	if len(b.Commit) == 0 && b.JournalCursor == "" {
		return nil
	}
	next := checkpoint.Checkpoint{Positions: maps.Clone(d.committed.Positions), JournalCursor: d.committed.JournalCursor}
	maps.Copy(next.Positions, b.Commit)
	if b.JournalCursor != "" {
		next.JournalCursor = b.JournalCursor
	}
	if err := checkpoint.Save(d.cfg.Checkpoint, next); err != nil {
		return err
	}
	d.committed = next
	return nil
}

func (d *Deliverer) delivered(n int) {
	if d.cfg.Observe != nil && n > 0 {
		d.cfg.Observe.Delivered(n)
	}
}

// delay is the wait before retry number failures: exponential, capped, jittered; at least the backend's
// Retry-After.
func (d *Deliverer) delay(failures int, err error) time.Duration {
	base := d.cfg.Backoff
	for range failures {
		if base >= d.cfg.MaxBackoff/2 {
			base = d.cfg.MaxBackoff
			break
		}
		base *= 2
	}
	base = min(base, d.cfg.MaxBackoff)
	jittered := base/2 + time.Duration(d.rng.Int64N(int64(base/2)+1))
	var e *sink.Error
	if errors.As(err, &e) && e.RetryAfter > jittered {
		return e.RetryAfter
	}
	return jittered
}

// dropped records n refusals the backend did not attribute to records: one dead-letter entry with the count.
func (d *Deliverer) dropped(n int, reason error) error {
	f, enc, err := d.openDeadLetters()
	if err != nil {
		return err
	}
	if err := enc.Encode(map[string]any{"sink": d.cfg.Sink.Name(), "reason": reason.Error(), "records": n,
		"time": time.Now().UTC().Format(time.RFC3339Nano)}); err != nil {
		f.Close()
		return fmt.Errorf("dead letters %s: %w", d.cfg.DeadLetter, err)
	}
	if err := closeSynced(f); err != nil {
		return fmt.Errorf("dead letters %s: %w", d.cfg.DeadLetter, err)
	}
	d.cfg.Log.Warn("the backend refused records without naming them", "sink", d.cfg.Sink.Name(), "records", n, "reason", reason)
	if d.cfg.Observe != nil {
		d.cfg.Observe.DeadLettered(n)
	}
	return nil
}

func (d *Deliverer) openDeadLetters() (*os.File, *json.Encoder, error) {
	if err := os.MkdirAll(filepath.Dir(d.cfg.DeadLetter), 0o755); err != nil {
		return nil, nil, fmt.Errorf("dead letters: %w", err)
	}
	f, err := os.OpenFile(d.cfg.DeadLetter, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("dead letters: %w", err)
	}
	return f, json.NewEncoder(f), nil
}

func closeSynced(f *os.File) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// deadLetter appends the refused records, one JSON object per line, and syncs the file.
func (d *Deliverer) deadLetter(recs []sink.Record, rejected map[int]string) error {
	if len(rejected) == 0 {
		return nil
	}
	f, enc, err := d.openDeadLetters()
	if err != nil {
		return err
	}
	n := 0
	for i, reason := range rejected {
		if i < 0 || i >= len(recs) {
			continue
		}
		r := recs[i]
		attrs := make(map[string]string, len(r.Attrs))
		for _, a := range r.Attrs {
			attrs[a.Key] = a.Value
		}
		if err := enc.Encode(map[string]any{"sink": d.cfg.Sink.Name(), "reason": reason, "key": r.Key,
			"time": r.Time.UTC().Format(time.RFC3339Nano), "attrs": attrs, "body": r.Body}); err != nil {
			f.Close()
			return fmt.Errorf("dead letters %s: %w", d.cfg.DeadLetter, err)
		}
		n++
	}
	if err := closeSynced(f); err != nil {
		return fmt.Errorf("dead letters %s: %w", d.cfg.DeadLetter, err)
	}
	d.cfg.Log.Warn("records refused for good went to the dead-letter file", "sink", d.cfg.Sink.Name(), "records", n, "file", d.cfg.DeadLetter)
	if d.cfg.Observe != nil {
		d.cfg.Observe.DeadLettered(n)
	}
	return nil
}
