// Package journal reads the systemd journal as journalctl exports it (`journalctl -o export`, the binary-safe
// export format), from a cursor, and follows it. The agent runs the node's own journalctl (in the DaemonSet, the
// host's binary through a read-only host mount), as the OpenTelemetry Collector's journald receiver and Vector do,
// so the agent stays a static binary without cgo.
package journal

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"berth.dev/berth/agent/logship/sink"
)

// Entry is one journal entry.
type Entry struct {
	// Cursor says where the entry is; reading resumes after it.
	Cursor string
	Time   time.Time
	Fields map[string][]byte
}

// maxField bounds one field (journald's own default limit for a field is 64 KiB per line of MESSAGE; binary data
// can be larger, up to the journal's 768 MiB entry limit, which no sink takes).
const maxField = 16 << 20

// Parse reads entries in the export format from r and calls emit for each, until r ends (a partial entry at the end
// is not emitted). An error from emit stops it.
func Parse(r io.Reader, emit func(Entry) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	e := Entry{Fields: map[string][]byte{}}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("journal export: a field name or text line longer than %d bytes", br.Size())
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		line = line[:len(line)-1]
		if len(line) == 0 {
			if len(e.Fields) > 0 || e.Cursor != "" {
				if err := emit(e); err != nil {
					return err
				}
			}
			e = Entry{Fields: map[string][]byte{}}
			continue
		}
		name, value, text := bytes.Cut(line, []byte{'='})
		key := string(name)
		var v []byte
		if text {
			v = bytes.Clone(value)
		} else {
			// A binary field: the name alone, then a 64-bit little-endian size, the data and a newline.
			var size uint64
			if err := binary.Read(br, binary.LittleEndian, &size); err != nil {
				return nilAtEOF(err)
			}
			if size > maxField {
				return fmt.Errorf("journal export: field %s is %d bytes (more than %d)", key, size, maxField)
			}
			v = make([]byte, size+1)
			if _, err := io.ReadFull(br, v); err != nil {
				return nilAtEOF(err)
			}
			if v[size] != '\n' {
				return fmt.Errorf("journal export: field %s: no newline after its %d bytes", key, size)
			}
			v = v[:size]
		}
		switch key {
		case "__CURSOR":
			e.Cursor = string(v)
		case "__REALTIME_TIMESTAMP":
			if us, err := strconv.ParseInt(string(v), 10, 64); err == nil {
				e.Time = time.UnixMicro(us)
			}
		default:
			e.Fields[key] = v
		}
	}
}

func nilAtEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil // the stream ended inside an entry (journalctl stopped): that entry is read again later
	}
	return err
}

// Config says which journal to read and how.
type Config struct {
	// Command runs journalctl (default ["journalctl"]), found inside Root when Root is set.
	Command []string
	// Root, if set, is another system's root directory (in a pod, the host's / mounted read-only): journalctl is
	// run chrooted there, so the host's own journalctl reads the host's journal with the host's libraries, of
	// whatever version and distribution (this needs CAP_SYS_CHROOT).
	Root string
	// Directory is the journal directory (-D, inside Root if set; empty: the system journal).
	Directory string
	// After is the cursor of the last entry delivered: reading starts after it (empty: from the oldest entry).
	After string
	// Follow keeps reading as entries are written.
	Follow bool
}

// Read runs journalctl and calls emit for every entry until the journal ends (Follow: until ctx ends or emit
// fails). journalctl's own error is returned with what it said.
func Read(ctx context.Context, cfg Config, emit func(Entry) error) error {
	cmdline := cfg.Command
	if len(cmdline) == 0 {
		cmdline = []string{"journalctl"}
	}
	args := append(append([]string(nil), cmdline[1:]...), "--output=export", "--no-pager", "--quiet")
	if cfg.Directory != "" {
		args = append(args, "--directory="+cfg.Directory)
	}
	if cfg.After != "" {
		args = append(args, "--after-cursor="+cfg.After)
	}
	if cfg.Follow {
		args = append(args, "--follow", "--no-tail")
	}
	name := cmdline[0]
	if cfg.Root != "" && !strings.Contains(name, "/") {
		// exec would look it up on this system's PATH; it runs inside the root, so look there.
		name = findIn(cfg.Root, name)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	if cfg.Root != "" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: cfg.Root}
		cmd.Dir = "/"
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &limited{w: &stderr, n: 4096}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	perr := Parse(out, emit)
	if perr != nil {
		cmd.Process.Kill()
	}
	werr := cmd.Wait()
	switch {
	case perr != nil:
		return perr
	case ctx.Err() != nil:
		return nil
	case werr != nil:
		return fmt.Errorf("journal: %s: %w: %s", cmdline[0], werr, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// findIn is the path inside root of the program called name, looked up in the usual bin directories; name
// itself if none has it (exec then fails with name in the error).
func findIn(root, name string) string {
	for _, dir := range []string{"/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"} {
		if st, err := os.Stat(filepath.Join(root, dir, name)); err == nil && st.Mode().IsRegular() {
			return dir + "/" + name
		}
	}
	return name
}

type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(b []byte) (int, error) {
	if l.n > 0 {
		k := min(len(b), l.n)
		l.w.Write(b[:k])
		l.n -= k
	}
	return len(b), nil
}

// fields are the journal fields a record carries, and their names on it.
var fields = [][2]string{{"_SYSTEMD_UNIT", "systemd.unit"}, {"SYSLOG_IDENTIFIER", "syslog.identifier"},
	{"PRIORITY", "priority"}, {"_PID", "process.pid"}, {"_HOSTNAME", "host.name"}, {"_TRANSPORT", "journal.transport"}}

// Record is entry as a log record: MESSAGE as the body, the unit, identifier, priority, pid, host and transport
// as fields, the node, and the cursor as the record's key.
func Record(e Entry, node string) sink.Record {
	r := sink.Record{Time: e.Time, Body: string(e.Fields["MESSAGE"]), Key: e.Cursor}
	for _, f := range fields {
		if v, ok := e.Fields[f[0]]; ok {
			r.Attrs = append(r.Attrs, sink.Attr{Key: f[1], Value: string(v)})
		}
	}
	if node != "" {
		r.Attrs = append(r.Attrs, sink.Attr{Key: "node", Value: node})
	}
	r.Attrs = append(r.Attrs, sink.Attr{Key: "log.source", Value: "journal"})
	return r
}
