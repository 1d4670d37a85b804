package journal_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/agent/logship/journal"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/wait"
)

// export writes entries from..to in the export format: MESSAGE "journal line N" as text, except every 100th,
// which is binary (it holds a newline), with a unit and a priority.
func export(from, to int, at time.Time) []byte {
	var b bytes.Buffer
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\n", at.Add(time.Duration(i)*time.Millisecond).UnixMicro(), 1000+i)
		if i%100 == 0 {
			msg := fmt.Sprintf("journal line %05d\nsecond line", i)
			b.WriteString("MESSAGE\n")
			binary.Write(&b, binary.LittleEndian, uint64(len(msg)))
			b.WriteString(msg + "\n")
		} else {
			fmt.Fprintf(&b, "MESSAGE=journal line %05d\n", i)
		}
		b.WriteString("_SYSTEMD_UNIT=kubelet.service\nPRIORITY=6\nSYSLOG_IDENTIFIER=kubelet\n\n")
	}
	return b.Bytes()
}

// writeJournal makes a real journal file at path from the export stream, with systemd-journal-remote.
func writeJournal(t *testing.T, path string, data []byte) {
	t.Helper()
	cmd := exec.Command(tier.JournalRemoteBin, "--output="+path, "-")
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
}

func message(i int) string {
	if i%100 == 0 {
		return fmt.Sprintf("journal line %05d\nsecond line", i)
	}
	return fmt.Sprintf("journal line %05d", i)
}

// Real journal files (written by systemd-journal-remote, read by journalctl): every entry comes back with its
// message (binary ones too), time, fields and a cursor; reading after a cursor gives exactly the entries after it;
// following picks up entries written later, until the context ends.
func TestReadsAJournal(t *testing.T) {
	tier.Present(t, tier.JournalRemote)
	dir := t.TempDir()
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	writeJournal(t, filepath.Join(dir, "first.journal"), export(0, 1000, at))
	var got []journal.Entry
	if err := journal.Read(context.Background(), journal.Config{Directory: dir}, func(e journal.Entry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1000 {
		t.Fatalf("%d entries, want 1000", len(got))
	}
	for i, e := range got {
		if string(e.Fields["MESSAGE"]) != message(i) || e.Cursor == "" || !e.Time.Equal(at.Add(time.Duration(i)*time.Millisecond)) {
			t.Fatalf("entry %d: %q at %v, cursor %q", i, e.Fields["MESSAGE"], e.Time, e.Cursor)
		}
	}
	r := journal.Record(got[100], "node-1")
	if string(r.Body) != message(100) || r.Key != got[100].Cursor || fmt.Sprint(r.Attrs) != "[{systemd.unit kubelet.service} {syslog.identifier kubelet} {priority 6} {node node-1} {log.source journal}]" {
		t.Errorf("record %+v", r)
	}

	var after []journal.Entry
	if err := journal.Read(context.Background(), journal.Config{Directory: dir, After: got[499].Cursor}, func(e journal.Entry) error {
		after = append(after, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(after) != 500 || string(after[0].Fields["MESSAGE"]) != message(500) {
		t.Fatalf("after entry 499: %d entries, the first %q", len(after), after[0].Fields["MESSAGE"])
	}

	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var followed []string
	done := make(chan error, 1)
	go func() {
		done <- journal.Read(ctx, journal.Config{Directory: dir, After: got[999].Cursor, Follow: true}, func(e journal.Entry) error {
			mu.Lock()
			followed = append(followed, string(e.Fields["MESSAGE"]))
			mu.Unlock()
			return nil
		})
	}()
	writeJournal(t, filepath.Join(dir, "second.journal"), export(1000, 1200, at))
	wait.For(t, 30*time.Second, "the 200 entries written while following", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(followed) >= 200
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("following ended with %v", err)
	}
	if followed[0] != message(1000) || len(followed) != 200 {
		t.Errorf("followed %d entries, the first %q", len(followed), followed[0])
	}
}

// With Root, the journalctl of another system's root is run there and reads that system's journal: as in the
// DaemonSet, where the host's / is mounted read-only and the host's journalctl (with the host's libraries) reads the
// host's journal. The root here holds only journalctl, the libraries ldd names, a machine ID and a journal under
// /var/log/journal/<machine-id>, so it is that root's journal and that root's journalctl or nothing.
func TestReadsAnotherRootsJournal(t *testing.T) {
	tier.Require(t, tier.Root, tier.JournalRemote) // chroot(2) takes CAP_SYS_CHROOT
	journalctl, err := exec.LookPath("journalctl")
	if err != nil {
		t.Fatalf("journalctl: %v", err)
	}
	root := t.TempDir()
	for _, p := range append([]string{journalctl}, sharedLibraries(t, journalctl)...) {
		copyFile(t, p, filepath.Join(root, p))
	}
	const machineID = "0f0e0d0c0b0a09080706050403020100"
	copyFile(t, "", filepath.Join(root, "etc/machine-id"))
	if err := os.WriteFile(filepath.Join(root, "etc/machine-id"), []byte(machineID+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	copyFile(t, "", filepath.Join(root, "var/log/journal", machineID, "system.journal"))
	writeJournal(t, filepath.Join(root, "var/log/journal", machineID, "system.journal"), export(0, 300, at))

	var got []string
	if err := journal.Read(context.Background(), journal.Config{Root: root}, func(e journal.Entry) error {
		got = append(got, string(e.Fields["MESSAGE"]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 300 || got[0] != message(0) || got[299] != message(299) {
		t.Fatalf("%d entries from the root's journal, want 300 (first %q)", len(got), got)
	}
	if err := journal.Read(context.Background(), journal.Config{Root: t.TempDir()}, func(journal.Entry) error { return nil }); err == nil || !strings.Contains(err.Error(), "journalctl") {
		t.Errorf("a root without journalctl: %v, want an error naming journalctl", err)
	}
}

// sharedLibraries are the files ldd says bin loads, the dynamic loader included.
func sharedLibraries(t *testing.T, bin string) []string {
	t.Helper()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	var libs []string
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs
}

// copyFile copies from (following symlinks) to to, making its directories; with from empty, only the directories.
func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if from == "" {
		return
	}
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// A journalctl that fails says why; a directory that is not a journal is an error, never a hang.
func TestJournalctlErrors(t *testing.T) {
	tier.Present(t, tier.JournalRemote)
	err := journal.Read(context.Background(), journal.Config{Directory: filepath.Join(t.TempDir(), "none"), After: "not-a-cursor"}, func(journal.Entry) error { return nil })
	if err == nil {
		t.Fatal("a bad cursor in a missing directory: no error")
	}
	if err := journal.Read(context.Background(), journal.Config{Command: []string{filepath.Join(t.TempDir(), "no-journalctl")}}, func(journal.Entry) error { return nil }); err == nil {
		t.Error("a missing journalctl: no error")
	}
}

// go test -fuzz FuzzParse ./agent/logship/journal: whatever the stream, Parse returns (an error or nil) without
// panicking, and every entry it emits has its fields.
func FuzzParse(f *testing.F) {
	f.Add(export(0, 3, time.Unix(0, 0)))
	f.Add([]byte("MESSAGE\n\x05\x00\x00\x00\x00\x00\x00\x00hello\n\n"))
	f.Add([]byte("MESSAGE\n\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		journal.Parse(bytes.NewReader(data), func(e journal.Entry) error {
			if e.Fields == nil {
				t.Fatal("an entry without its field map")
			}
			return nil
		})
	})
}
