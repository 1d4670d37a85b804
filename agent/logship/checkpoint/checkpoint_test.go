package checkpoint

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"berth.dev/berth/agent/logship/tail"
)

func TestRoundTripAndBadFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "victorialogs.json")
	if c, err := Load(path); err != nil || len(c.Positions) != 0 || c.JournalCursor != "" {
		t.Fatalf("a missing checkpoint: %v, %v; want empty", c, err)
	}
	ps := Checkpoint{JournalCursor: "s=abc;i=5", Positions: Positions{"/var/log/pods/ns_pod_uid/c/0.log": {Path: "/var/log/pods/ns_pod_uid/c/0.log.20261203-110000",
		Identity: tail.Identity{Dev: 65024, Ino: 42, Head: []byte("2026-12-03T11:00:00Z stdout F x")}, Offset: 1234}}}
	// A write killed midway leaves its temporary file: it is swept, and the last checkpoint is what loads.
	if err := Save(path, ps); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(dir, ".victorialogs.json.tmp-123")
	if err := os.WriteFile(leftover, []byte(`{"version":1,"posi`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil || !reflect.DeepEqual(got, ps) {
		t.Fatalf("loaded %+v, %v; saved %+v", got, err, ps)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Error("the interrupted write's temporary file is still there")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
	}
	for content, want := range map[string]string{
		`{"version":1,"positions":{"a":{"offset":-1}}}`:  `positions["a"].offset: -1 is negative`,
		`{"version":2,"positions":{}}`:                   "version: 2, want 1",
		`{"version":1,"positions":{},"extra":true}`:      `unknown field "extra"`,
		`{"version":1}{"version":1}`:                     "more than one",
		`{"version":1,"positions":{"a":{"offset":"x"}}}`: "cannot unmarshal",
		"\x00garbage": "invalid character",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v; want an error naming the file and %q", content, err, want)
		}
	}
}
