package tail

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"berth.dev/berth/agent/logship/cri"
)

// Line is one line of the followed file, and where reading starts again once it is delivered.
type Line struct {
	cri.Line
	// Malformed says the line is not a CRI record: Content is the raw line (cut at the line cap).
	Malformed bool
	// At is the position to save once this line and every earlier one are delivered.
	At Position
}

// Position is where to go on reading: in the file with this identity (last seen at Path), from Offset.
type Position struct {
	Path string `json:"path"`
	Identity
	Offset int64 `json:"offset"`
}

// Config says what to follow.
type Config struct {
	// Path is the file the runtime writes (…/<container>/0.log). Rotated files are found beside it: Path
	// followed by "." and a suffix, gzipped (".gz", read as their content) or not.
	Path string
	// MaxLine caps a merged line (default cri.DefaultMaxLine); ReadSize is how much one read takes (64 KiB).
	MaxLine, ReadSize int
	// Log gets the follower's moves (rotations, truncations, restarts) at debug level; default: discarded.
	Log *slog.Logger
}

// Follower follows Config.Path across renames (the kubelet's rotation) and truncations (copytruncate), reading
// a rotated file to its end before it moves on. It is not safe for concurrent use.
type Follower struct {
	cfg Config
	cur *reader
	// copies are files to read before cur: a rotated copy that holds what cur held past where a truncation cut.
	copies []*reader
}

// New follows cfg.Path from from (nil: from the start of the file there now, or of the first one to appear). A from whose file has been renamed
// or copied since is found beside the path and read to its end first.
func New(cfg Config, from *Position) (*Follower, error) {
	if cfg.MaxLine <= 0 {
		cfg.MaxLine = cri.DefaultMaxLine
	}
	if cfg.ReadSize <= 0 {
		cfg.ReadSize = 64 << 10
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	f := &Follower{cfg: cfg}
	cur, err := f.open(cfg.Path, 0)
	if err != nil {
		return nil, err
	}
	if from == nil {
		f.cur = cur // held open from now on: a rotation from here on is followed
		return f, nil
	}
	if cur != nil && from.Identity.Same(cur.id) {
		cfg.Log.Debug("resuming", "path", cfg.Path, "at", from.Offset)
		cur.seek(from.Offset)
		f.cur = cur
		return f, nil
	}
	// The file of from is not at the path any more, as it was: rotated (renamed, or copied and truncated) while
	// we were away. Read it, or its copy, from where we were; then its inode from the start if it was truncated
	// and renamed since; then the files rotated after those; then the path from its start.
	last := ""
	old, err := f.find(from.Identity, from.Offset)
	if err != nil {
		return nil, err
	}
	if old != nil {
		old.as(from.Identity)
		f.copies, last = append(f.copies, old), old.path
	}
	if cur == nil || cur.id.Dev != from.Dev || cur.id.Ino != from.Ino {
		if cut, err := f.findTruncated(from.Identity); err != nil {
			return nil, err
		} else if cut != nil && (old == nil || old.id.Dev != cut.id.Dev || old.id.Ino != cut.id.Ino) {
			f.copies, last = append(f.copies, cut), cut.path
		}
	}
	if last != "" {
		later, err := f.rotatedAfter(last)
		if err != nil {
			return nil, err
		}
		f.copies = append(f.copies, later...)
	}
	cfg.Log.Debug("resuming in rotated files", "path", cfg.Path, "file", from.Identity, "at", from.Offset, "queued", paths(f.copies))
	f.cur = cur
	return f, nil
}

// Close closes the files.
func (f *Follower) Close() error {
	var errs []error
	for _, r := range append(f.copies, f.cur) {
		if r != nil {
			errs = append(errs, r.f.Close())
		}
	}
	return errors.Join(errs...)
}

// Poll emits every whole line there is to read now (at most about max bytes of them; 0: no limit) and reports
// whether it read anything. It never waits: call it again when the file may have grown.
func (f *Follower) Poll(max int, emit func(Line)) (bool, error) {
	read := 0
	for len(f.copies) > 0 {
		r := f.copies[0]
		n, err := r.read(f.cfg, max-read, emit)
		read += n
		if errors.Is(err, ErrCorrupt) {
			// What it held past here is lost; the files after it are not.
			f.cfg.Log.Warn("a compressed rotated log is corrupt; going on with the next file", "err", err)
			n, err = 0, nil
		}
		if err != nil {
			return read > 0, err
		}
		if n > 0 && (max == 0 || read < max) {
			continue
		}
		if n == 0 {
			// A rotated copy does not grow: at its end, done.
			r.flush(emit)
			r.f.Close()
			f.copies = f.copies[1:]
			continue
		}
		return true, nil
	}
	if f.cur == nil {
		cur, err := f.open(f.cfg.Path, 0)
		if err != nil || cur == nil {
			return read > 0, err
		}
		f.cur = cur
	}
	for {
		n, err := f.cur.read(f.cfg, max-read, emit)
		read += n
		if err != nil {
			return read > 0, err
		}
		if n > 0 {
			f.cur.idle = 0
			if max > 0 && read >= max {
				return true, nil
			}
			continue
		}
		break
	}
	// At the end of cur: has it been truncated, or renamed away?
	id, size, err := identify(f.cur.f)
	if err != nil {
		return read > 0, fmt.Errorf("tail: %s: %w", f.cur.path, err)
	}
	if size < f.cur.end() || !f.cur.id.Same(id) {
		// Truncated (copytruncate): what was past our offset is in the copy beside it, if there is one, which
		// also finishes a line whose first records we read here.
		old, err := f.find(f.cur.id, f.cur.end())
		if err != nil {
			return read > 0, err
		}
		f.cfg.Log.Debug("truncated", "path", f.cur.path, "file", f.cur.id, "at", f.cur.end(), "copy", old != nil)
		if old != nil {
			old.m, old.off, old.buf = f.cur.m, f.cur.off, append(old.buf[:0], f.cur.buf...)
			old.as(f.cur.id)
			f.copies = append(f.copies, old)
		} else {
			f.cur.flush(emit)
		}
		f.cur.restart(id)
		return true, nil
	}
	f.cur.id = id // it may know more of its head now
	st, err := os.Stat(f.cfg.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return read > 0, nil // renamed, the new file not there yet: keep reading the old one
	}
	if err != nil {
		return read > 0, fmt.Errorf("tail: %w", err)
	}
	if sameFile(st, f.cur.f) {
		f.cur.idle = 0
		return read > 0, nil
	}
	// Renamed away, and the runtime has opened a new file at the path. A write it began before the reopen may
	// still land: move on only after a second poll at the end found nothing more.
	if f.cur.idle++; f.cur.idle < 2 {
		return read > 0, nil
	}
	// Files rotated after this one (we lagged by more than a rotation) come before the new one at the path.
	name := f.cur.path
	if moved, err := f.find(f.cur.id, 0); err == nil && moved != nil {
		name = moved.path
		moved.f.Close()
	}
	later, err := f.rotatedAfter(name)
	if err != nil {
		return read > 0, err
	}
	end := f.cur.end()
	f.cur.flush(emit)
	f.cur.f.Close()
	f.cur = nil
	f.copies = append(f.copies, later...)
	f.cfg.Log.Debug("rotated", "path", f.cfg.Path, "to", name, "at", end, "queued", paths(later))
	next, err := f.open(f.cfg.Path, 0)
	if err != nil {
		return true, err
	}
	f.cur = next
	return true, nil
}

// Lag is how many bytes are still to read: the rest of the rotated files queued and of the current file.
func (f *Follower) Lag() int64 {
	var n int64
	for _, r := range append(f.copies[:len(f.copies):len(f.copies)], f.cur) {
		if r == nil {
			continue
		}
		if fi, err := r.f.Stat(); err == nil && fi.Size() > r.end() {
			n += fi.Size() - r.end()
		}
	}
	return n
}

// open opens path at offset; nil if there is no such file.
func (f *Follower) open(path string, offset int64) (*reader, error) {
	file, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	var lf logFile = file
	if strings.HasSuffix(path, ".gz") {
		if lf, err = openGz(file); err != nil {
			file.Close()
			return nil, fmt.Errorf("tail: %s: %w", path, err)
		}
	}
	id, _, err := identify(lf)
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("tail: %s: %w", path, err)
	}
	r := &reader{f: lf, path: path, id: id, m: cri.Merger{Max: f.cfg.MaxLine}}
	r.seek(offset)
	return r, nil
}

// rotated are the rotated files beside the path, oldest first (the kubelet's suffix is a time stamp, so names
// sort by age). A gzipped one counts unless the file it was made of is still there (the kubelet writes the .gz,
// then removes the file); the kubelet's temporary files do not.
func (f *Follower) rotated() ([]string, error) {
	names, err := filepath.Glob(f.cfg.Path + ".*")
	if err != nil {
		return nil, fmt.Errorf("tail: %w", err)
	}
	sort.Strings(names)
	return slices.DeleteFunc(names, func(n string) bool {
		return strings.HasSuffix(n, ".tmp") || strings.HasSuffix(n, ".gz") && slices.Contains(names, strings.TrimSuffix(n, ".gz"))
	}), nil
}

// rotatedAfter opens, from their start, the rotated files that sort after name.
func (f *Follower) rotatedAfter(name string) ([]*reader, error) {
	names, err := f.rotated()
	if err != nil {
		return nil, err
	}
	if name == f.cfg.Path {
		return nil, nil // where the file went is not known: nothing is known to come after it
	}
	var out []*reader
	for _, n := range names {
		if n <= name || n == name+".gz" {
			continue
		}
		r, err := f.open(n, 0)
		if err != nil {
			// Unreadable (a compressed file without a gzip header): skipped, not waited on.
			f.cfg.Log.Warn("a rotated log cannot be read; skipped", "err", err)
			continue
		}
		if r != nil {
			out = append(out, r)
		}
	}
	return out, nil
}

// find looks beside the path for the file of id (renamed) or a copy of it (copytruncate) that reaches offset, and
// opens it there.
func (f *Follower) find(id Identity, offset int64) (*reader, error) {
	names, err := f.rotated()
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		r, err := f.open(name, offset)
		if err != nil || r == nil {
			continue // gone since the glob, or unreadable: not it
		}
		if fi, err := r.f.Stat(); err == nil && fi.Size() >= offset && (id.Same(r.id) || id.Copy(r.id)) {
			return r, nil
		}
		r.f.Close()
	}
	return nil, nil
}

// findTruncated looks beside the path for the inode of id holding other content now (truncated and written again,
// then rotated), and opens it at its start.
func (f *Follower) findTruncated(id Identity) (*reader, error) {
	names, err := f.rotated()
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		r, err := f.open(name, 0)
		if err != nil || r == nil {
			continue
		}
		if r.id.Dev == id.Dev && r.id.Ino == id.Ino && !id.Same(r.id) {
			return r, nil
		}
		r.f.Close()
	}
	return nil, nil
}

func paths(rs []*reader) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = fmt.Sprintf("%s@%d", filepath.Base(r.path), r.end())
	}
	return out
}

func sameFile(st os.FileInfo, f logFile) bool {
	fi, err := f.Stat()
	return err == nil && os.SameFile(st, fi)
}

// reader reads one file's lines from an offset.
type reader struct {
	f    logFile
	path string
	id   Identity
	off  int64  // offset of buf[0]
	buf  []byte // read, not yet a whole line
	m    cri.Merger
	idle int // polls at the end after the path moved on
	// posID, if set, is the identity positions name instead of the file's own: a copy (copytruncate) is read as
	// the file it copies, so that a restart looks for that file's copy, then for its inode truncated since.
	posID *Identity
}

// as makes positions in r name the file of id, which r copies (or is).
func (r *reader) as(id Identity) {
	if !id.Same(r.id) {
		r.posID = &id
	}
}

func (r *reader) seek(offset int64) { r.off, r.buf = offset, r.buf[:0] }

// end is the offset of the next byte to read.
func (r *reader) end() int64 { return r.off + int64(len(r.buf)) }

// restart reads the (truncated) file again from its start, as the file id now is.
func (r *reader) restart(id Identity) {
	r.id, r.idle, r.m = id, 0, cri.Merger{Max: r.m.Max}
	r.seek(0)
}

// read reads up to cfg.ReadSize bytes (or max, if smaller and not 0) and emits the whole lines in them; n is how
// many bytes it read (0 at the end of the file).
func (r *reader) read(cfg Config, max int, emit func(Line)) (int, error) {
	size := cfg.ReadSize
	if max > 0 && max < size {
		size = max
	}
	have := len(r.buf)
	if cap(r.buf)-have < size {
		r.buf = append(make([]byte, 0, have+size), r.buf...)
	}
	n, err := r.f.ReadAt(r.buf[have:have+size], r.end())
	var corrupt error // the lines read before a compressed file's corruption still count
	if errors.Is(err, ErrCorrupt) {
		corrupt, err = err, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("tail: %s: %w", r.path, err)
	}
	if n == 0 {
		return 0, corrupt
	}
	// Still the file we were reading? A copytruncate may have cut it and the writer filled it past our offset
	// again, so that what we just read is the middle of new lines: then it is dropped, and the caller finds the
	// truncation at the end (what we had not read yet is in the copy).
	id, _, err := identify(r.f)
	if err != nil {
		return 0, fmt.Errorf("tail: %s: %w", r.path, err)
	}
	if !r.id.Same(id) {
		return 0, nil
	}
	r.id = id
	r.buf = r.buf[:have+n]
	r.lines(cfg.MaxLine, emit)
	return n, corrupt
}

// lines emits the whole lines in buf and keeps the rest. A line longer than the cap without its newline is emitted
// in pieces, as malformed.
func (r *reader) lines(maxLine int, emit func(Line)) {
	limit := maxLine + 256 // a record: the cap's worth of content, its time, stream and tag
	start := 0
	for {
		i := bytes.IndexByte(r.buf[start:], '\n')
		if i < 0 {
			break
		}
		line := r.buf[start : start+i]
		from, to := r.off+int64(start), r.off+int64(start+i+1)
		r.record(line, from, to, emit)
		start += i + 1
	}
	for len(r.buf)-start > limit {
		from := r.off + int64(start)
		r.malformed(r.buf[start:start+limit], from+int64(limit), emit)
		start += limit
	}
	r.off += int64(start)
	r.buf = append(r.buf[:0], r.buf[start:]...)
}

func (r *reader) record(line []byte, from, to int64, emit func(Line)) {
	rec, err := cri.Parse(line)
	if err != nil {
		if len(line) > r.m.Max && r.m.Max > 0 {
			line = line[:r.m.Max]
		}
		r.malformed(line, to, emit)
		return
	}
	r.m.Add(rec, from, to, func(l cri.Line) { emit(Line{Line: l, At: r.at(l.Commit)}) })
}

func (r *reader) malformed(raw []byte, to int64, emit func(Line)) {
	commit := to
	if p, ok := r.m.Pending(); ok && p < commit {
		commit = p
	}
	emit(Line{Line: cri.Line{Content: raw, Commit: commit}, Malformed: true, At: r.at(commit)})
}

// flush emits a partial line left at the end of a file the runtime will not write again.
func (r *reader) flush(emit func(Line)) {
	r.m.Flush(r.end(), func(l cri.Line) { emit(Line{Line: l, At: r.at(l.Commit)}) })
}

func (r *reader) at(offset int64) Position {
	if r.posID != nil {
		return Position{Path: r.path, Identity: *r.posID, Offset: offset}
	}
	return Position{Path: r.path, Identity: r.id, Offset: offset}
}
