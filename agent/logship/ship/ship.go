// Package ship is the read side of one sink's pipeline: it finds the container logs under the pods' directory,
// follows each (package tail) from the sink's checkpoint, turns their lines into records with the pod's fields,
// and hands them to the sink's deliverer a batch at a time. While a batch is being delivered nothing more is read,
// so a sink that is down costs no memory: the log files are the buffer.
package ship

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"berth.dev/berth/agent/logship/checkpoint"
	"berth.dev/berth/agent/logship/cri"
	"berth.dev/berth/agent/logship/deliver"
	"berth.dev/berth/agent/logship/journal"
	"berth.dev/berth/agent/logship/pods"
	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/tail"
)

// Config is one sink's pipeline.
type Config struct {
	// Root is the pods' log directory (/var/log/pods).
	Root      string
	Deliverer *deliver.Deliverer
	// Node is this node's name, on every record.
	Node string
	// BatchRecords and BatchBytes bound a batch (defaults 1000 records, 1 MiB); Linger is how long a batch that
	// is not full waits for more (default 1 s); Idle is the pause when there was nothing to read (default 250 ms);
	// Rescan is how often the directory is listed for new containers (default 5 s).
	BatchRecords, BatchBytes int
	Linger, Idle, Rescan     time.Duration
	// MaxLine caps a merged line (tail's default).
	MaxLine int
	// Lag, if set, is given each followed file's lag in bytes after every rescan.
	Lag func(map[string]int64)
	// Buffered, if set, is told what is held in memory (records and bytes read, not yet acknowledged) whenever
	// that changes between reads and deliveries.
	Buffered func(records, bytes int)
	// Meta, if set, gives more fields of a pod by its UID (its labels, package podmeta).
	Meta func(uid types.UID) []sink.Attr
	// Journal, if set, is read too (followed, from the sink's journal cursor); its entries go into the same
	// batches.
	Journal *journal.Config
	Log     *slog.Logger
}

type source struct {
	c pods.Container
	f *tail.Follower
}

// fields are the container's fields on its records of each stream: the pod's, the node, the pod's labels (which
// the informer may learn later, so they are asked for each time) and the stream. The records read in one poll
// share them.
func (s *source) fields(cfg Config) [2][]sink.Attr {
	attrs := append(s.c.Attrs(), sink.Attr{Key: "node", Value: cfg.Node})
	if cfg.Meta != nil {
		attrs = append(attrs, cfg.Meta(types.UID(s.c.UID))...)
	}
	var out [2][]sink.Attr
	for _, st := range []cri.Stream{cri.Stdout, cri.Stderr} {
		out[st] = slices.Clip(append(slices.Clip(attrs), sink.Attr{Key: "stream", Value: st.String()}))
	}
	return out
}

// key is the record key of the line that ends at at: the file's device and inode and the offset,
// "<dev>-<ino>-<offset>".
func key(at tail.Position) string {
	var b [64]byte
	k := strconv.AppendUint(b[:0], at.Dev, 10)
	k = append(k, '-')
	k = strconv.AppendUint(k, at.Ino, 10)
	k = append(k, '-')
	k = strconv.AppendInt(k, at.Offset, 10)
	return string(k)
}

// Run ships until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 1000
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 1 << 20
	}
	if cfg.Linger <= 0 {
		cfg.Linger = time.Second
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 250 * time.Millisecond
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	entries := readJournal(ctx, cfg)
	sources := map[string]*source{}
	defer func() {
		for _, s := range sources {
			s.f.Close()
		}
	}()
	var lastScan time.Time
	var b deliver.Batch
	size := 0
	started := time.Time{}
	reported := map[string]bool{}
	for {
		if time.Since(lastScan) >= cfg.Rescan {
			lastScan = time.Now()
			scan(cfg, sources, reported)
			if cfg.Lag != nil {
				lag := make(map[string]int64, len(sources))
				for p, s := range sources {
					lag[p] = s.f.Lag()
				}
				cfg.Lag(lag)
			}
		}
		read := false
		for path, s := range sources {
			if len(b.Records) >= cfg.BatchRecords || size >= cfg.BatchBytes {
				break
			}
			var fields [2][]sink.Attr // made for the first line read
			got, err := s.f.Poll(cfg.BatchBytes-size, func(l tail.Line) {
				if fields[0] == nil {
					fields = s.fields(cfg)
				}
				rec := sink.Record{Time: l.Time, Body: string(l.Content), Attrs: fields[l.Stream], Key: key(l.At)}
				if l.Malformed {
					rec.Time = time.Now()
					rec.Attrs = append(rec.Attrs, sink.Attr{Key: "log.malformed", Value: "true"})
				}
				b.Records = append(b.Records, rec)
				if b.Commit == nil {
					b.Commit = checkpoint.Positions{}
				}
				b.Commit[path] = l.At
				size += len(rec.Body) + 64
			})
			if err != nil {
				cfg.Log.Warn("reading a container log", "path", path, "err", err)
			}
			read = read || got
			if !got {
				if _, err := os.Stat(filepath.Dir(path)); errors.Is(err, os.ErrNotExist) {
					// The container's directory is gone (the pod was deleted) and its file read to the end:
					// forget it. (A file renamed away by a rotation keeps its directory.)
					s.f.Close()
					delete(sources, path)
				}
			}
		}
	journal:
		for entries != nil && len(b.Records) < cfg.BatchRecords && size < cfg.BatchBytes {
			select {
			case e := <-entries:
				rec := journal.Record(e, cfg.Node)
				b.Records = append(b.Records, rec)
				b.JournalCursor = e.Cursor
				size += len(rec.Body) + 64
				read = true
			default:
				break journal
			}
		}
		if len(b.Records) > 0 && started.IsZero() {
			started = time.Now()
		}
		if read && cfg.Buffered != nil {
			cfg.Buffered(len(b.Records), size)
		}
		full := len(b.Records) >= cfg.BatchRecords || size >= cfg.BatchBytes
		if len(b.Records) > 0 && (full || time.Since(started) >= cfg.Linger || !read) {
			if err := cfg.Deliverer.Deliver(ctx, b); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			b, size, started = deliver.Batch{}, 0, time.Time{}
			if cfg.Buffered != nil {
				cfg.Buffered(0, 0)
			}
			continue
		}
		if read {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(cfg.Idle):
		}
	}
}

// readJournal follows the journal from the sink's cursor into a channel of at most one batch (a full channel
// holds journalctl back: memory stays bounded), running journalctl again after the last entry it gave if it stops.
// nil if the journal is not read.
func readJournal(ctx context.Context, cfg Config) <-chan journal.Entry {
	if cfg.Journal == nil {
		return nil
	}
	out := make(chan journal.Entry, cfg.BatchRecords)
	jc := *cfg.Journal
	jc.Follow, jc.After = true, cfg.Deliverer.JournalCursor()
	go func() {
		for {
			err := journal.Read(ctx, jc, func(e journal.Entry) error {
				select {
				case out <- e:
					jc.After = e.Cursor
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
			if ctx.Err() != nil {
				return
			}
			cfg.Log.Warn("reading the journal; trying again in 5 s", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}()
	return out
}

// scan starts following the container logs that appeared.
func scan(cfg Config, sources map[string]*source, reported map[string]bool) {
	cs, errs := pods.Discover(cfg.Root)
	for _, err := range errs {
		if !reported[err.Error()] {
			reported[err.Error()] = true
			cfg.Log.Warn("not a container log; skipped", "err", err)
		}
	}
	for _, c := range cs {
		if _, ok := sources[c.Path]; ok {
			continue
		}
		f, err := tail.New(tail.Config{Path: c.Path, MaxLine: cfg.MaxLine, Log: cfg.Log}, cfg.Deliverer.Position(c.Path))
		if err != nil {
			cfg.Log.Warn("cannot follow a container log", "path", c.Path, "err", err)
			continue
		}
		sources[c.Path] = &source{c: c, f: f}
		cfg.Log.Debug("following", "path", c.Path)
	}
}
