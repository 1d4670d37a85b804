package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs/nodeconfig.md is what the generator writes from the API today (make lint checks the same with -check).
func TestNodeConfigReferenceIsCurrent(t *testing.T) {
	md, err := Render("../../agent/api/v1alpha1", "NodeConfig")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeOrCheck("../../docs/nodeconfig.md", md, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## NodeConfigSpec", "| `caCertHashes` | []string |", "[Discovery](#discovery)", "&lt;id&gt;"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

// A field without a doc comment is an error naming the file, line and field; a stale file is an error too.
func TestUndocumentedFieldAndStaleFile(t *testing.T) {
	dir := t.TempDir()
	src := "// Package x is a test API.\npackage x\n\n// Root is the kind.\ntype Root struct {\n\t// A is documented.\n\tA string `json:\"a\"`\n\tB int `json:\"b\"`\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "types.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Render(dir, "Root")
	if err == nil || !strings.Contains(err.Error(), "types.go:8") || !strings.Contains(err.Error(), "Root.B has no doc comment") {
		t.Fatalf("err = %v, want the undocumented field named with its line", err)
	}
	out := filepath.Join(dir, "ref.md")
	if err := os.WriteFile(out, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeOrCheck(out, []byte("new\n"), true); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Errorf("check of a stale file: %v", err)
	}
	if err := writeOrCheck(out, []byte("new\n"), false); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(out); string(data) != "new\n" {
		t.Errorf("written %q", data)
	}
}
