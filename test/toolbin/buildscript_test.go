package toolbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tools/build.sh with a fake tool that builds in no time: the first run builds and removes the tool's caches
// unused for 7 days and a killed build's directory, keeping a recently used cache; a second run is a cache hit
// that marks its cache used.
func TestBuildScriptPrunesStaleCaches(t *testing.T) {
	modRoot, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(modRoot, "tools", "build.sh"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(path, data string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "tools", "build.sh"), string(script), 0o755)
	write(filepath.Join(dir, "tools", "fake", "go.mod"), "module fake\n", 0o644)
	write(filepath.Join(dir, "tools", "fake", "go.sum"), "", 0o644)
	write(filepath.Join(dir, "tools", "fake", "build.inc"), "VERSION=1.0\nBINS=hello\nbuild_into() { printf '#!/bin/sh\\necho hi\\n' > \"$1/hello\"; chmod +x \"$1/hello\"; }\n", 0o644)
	cache := filepath.Join(dir, "cache")
	root := filepath.Join(cache, "fake")
	old, recent, killed := filepath.Join(root, "v0.9-aaaaaaaaaaaa"), filepath.Join(root, "v0.9-bbbbbbbbbbbb"), filepath.Join(root, ".build-v1.0.x1y2z3")
	for _, d := range []string{old, recent} {
		write(filepath.Join(d, ".complete"), "", 0o644)
	}
	write(filepath.Join(killed, "bin", "partial"), "", 0o644)
	long := time.Now().Add(-10 * 24 * time.Hour)
	if err := os.Chtimes(filepath.Join(old, ".complete"), long, long); err != nil {
		t.Fatal(err)
	}
	build := func() string {
		t.Helper()
		cmd := exec.Command("bash", filepath.Join(dir, "tools", "build.sh"), "fake")
		cmd.Env = append(os.Environ(), "BERTH_CACHE="+cache)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("build.sh: %v", err)
		}
		return strings.TrimSpace(string(out))
	}

	bin := build()
	if out, err := exec.Command(filepath.Join(bin, "hello")).Output(); err != nil || string(out) != "hi\n" {
		t.Fatalf("the built tool: %q %v", out, err)
	}
	for path, want := range map[string]bool{old: false, killed: false, recent: true} {
		if _, err := os.Stat(path); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", filepath.Base(path), err == nil, want)
		}
	}

	complete := filepath.Join(filepath.Dir(bin), ".complete")
	if err := os.Chtimes(complete, long, long); err != nil {
		t.Fatal(err)
	}
	if again := build(); again != bin {
		t.Errorf("second run: %s, want the cached %s", again, bin)
	}
	if st, err := os.Stat(complete); err != nil || time.Since(st.ModTime()) > time.Hour {
		t.Errorf("a cache hit did not mark the cache used: %v %v", st.ModTime(), err)
	}
}
