package configwatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Each new content is handed over once, whether the file is replaced by a rename (an editor's save, the kubelet's
// ..data swap) or written in place; an event that leaves the content as it was is no change; a file gone is a
// read failure, and the watch goes on.
func TestNewContentOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	changed, failed := make(chan string, 10), make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, Config{Path: path, Current: []byte("one"), Settle: 20 * time.Millisecond,
			Changed: func(b []byte) { changed <- string(b) }, ReadFailed: func(err error) { failed <- err }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-changed:
			if got != want {
				t.Fatalf("changed to %q, want %q", got, want)
			}
		case err := <-failed:
			t.Fatalf("read failed: %v; want %q", err, want)
		case <-time.After(10 * time.Second):
			t.Fatalf("no change to %q seen", want)
		}
	}
	// The watcher is set up once it sees a change; a rename over the file.
	for deadline := time.Now().Add(10 * time.Second); ; {
		tmp := filepath.Join(dir, ".tmp")
		os.WriteFile(tmp, []byte("two"), 0o600)
		os.Rename(tmp, path)
		select {
		case got := <-changed:
			if got != "two" {
				t.Fatalf("changed to %q, want two", got)
			}
		case <-time.After(200 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			t.Fatal("no change seen")
		}
		break
	}
	// The same content again, and another file of the directory: no change. Then a write in place.
	os.WriteFile(path, []byte("two"), 0o600)
	os.WriteFile(filepath.Join(dir, "other"), []byte("x"), 0o600)
	os.WriteFile(path, []byte("three"), 0o600)
	expect("three")
	select {
	case got := <-changed:
		t.Fatalf("an extra change %q", got)
	default:
	}
	os.Remove(path)
	select {
	case err := <-failed:
		if !os.IsNotExist(err) {
			t.Errorf("a removed file: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a removed file was not reported")
	}
	os.WriteFile(path, []byte("four"), 0o600)
	expect("four")
}
