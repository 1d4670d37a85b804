package logbackend

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// AppendCRI appends the container log lines from..to to path (its directory made) in the CRI format, as a
// runtime writes them (stdout, whole lines): line i's content is fmt.Sprintf(format, i). It may run in a
// goroutine of the test: a failure is an Error.
func AppendCRI(tb testing.TB, path, format string, from, to int) {
	appendCRI(tb, path, from, to, func(i int) string { return fmt.Sprintf(format, i) })
}

// AppendPadded appends lines from..to whose content is size bytes: "<i> " and x's.
func AppendPadded(tb testing.TB, path string, from, to, size int) {
	pad := strings.Repeat("x", size)
	appendCRI(tb, path, from, to, func(i int) string {
		msg := strconv.Itoa(i) + " "
		return msg + pad[:size-len(msg)]
	})
}

func appendCRI(tb testing.TB, path string, from, to int, content func(int) string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Error(err)
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		tb.Error(err)
		return
	}
	defer f.Close()
	var buf bytes.Buffer
	ts := time.Now().UTC().Format(time.RFC3339Nano)
	for i := from; i < to; i++ {
		fmt.Fprintf(&buf, "%s stdout F %s\n", ts, content(i))
		if buf.Len() > 1<<20 {
			if _, err := f.Write(buf.Bytes()); err != nil {
				tb.Error(err)
				return
			}
			buf.Reset()
		}
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		tb.Error(err)
	}
}
