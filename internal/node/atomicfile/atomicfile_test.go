package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesContentAndMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "secret.key")
	if err := Write(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "two" {
		t.Errorf("content = %q, want %q", got, "two")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the target (no temporary files left)", len(entries))
	}
}

func TestWriteFailureLeavesOldContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := Write(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A directory where the target's parent should be makes the write fail before any rename.
	if err := Write(filepath.Join(path, "child"), []byte("x"), 0o644); err == nil {
		t.Fatal("writing below a regular file succeeded, want an error")
	}
	got, _ := os.ReadFile(path)
	if string(got) != "old" {
		t.Errorf("content = %q after a failed write elsewhere, want %q", got, "old")
	}
}

// A write killed before its rename leaves its temporary file (0600, maybe a secret); Sweep removes exactly those:
// not the targets, not other hidden files, not directories, not names that only look similar.
func TestSweepRemovesOnlyKilledWritesTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	if err := Write(filepath.Join(dir, "kubeconfig"), []byte("target"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, ".kubeconfig.tmp-*") // what Write leaves when killed after CreateTemp
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	keep := []string{"kubeconfig", ".kubeconfig.swp", ".tmp-123", ".x.tmp-", ".x.tmp-12a", "y.tmp-123"}
	for _, k := range keep[1:] {
		os.WriteFile(filepath.Join(dir, k), nil, 0o600)
	}
	os.Mkdir(filepath.Join(dir, ".d.tmp-42"), 0o755)
	removed, err := Sweep(dir)
	if err != nil || len(removed) != 1 || removed[0] != f.Name() {
		t.Errorf("Sweep = %v, %v; want [%s]", removed, err, f.Name())
	}
	for _, k := range append(keep, ".d.tmp-42") {
		if _, err := os.Stat(filepath.Join(dir, k)); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	if removed, err := Sweep(filepath.Join(dir, "missing")); removed != nil || err != nil {
		t.Errorf("a missing dir: %v, %v", removed, err)
	}
}
