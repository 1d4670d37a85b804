package volume

import (
	"fmt"
	"strings"
	"testing"

	"berth.dev/berth/agent/shares/mountopts"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		ctx    map[string]string
		want   Volume
		source string
	}{
		{map[string]string{"source": "//files.example.com/data"}, Volume{Protocol: mountopts.SMB, Server: "files.example.com", Share: "data"}, "//files.example.com/data"},
		{map[string]string{"source": "//10.88.0.1/data/", "subDir": "pvc-1/"}, Volume{Protocol: mountopts.SMB, Server: "10.88.0.1", Share: "data", SubDir: "pvc-1"}, "//10.88.0.1/data"},
		{map[string]string{"source": "nfs:/export/a", "subDir": "x/./y", "csi.storage.k8s.io/pv/name": "pv"}, Volume{Protocol: mountopts.NFS, Server: "nfs", Share: "/export/a", SubDir: "x/y"}, "nfs:/export/a"},
		{map[string]string{"source": "[fd00::1]:/export"}, Volume{Protocol: mountopts.NFS, Server: "fd00::1", Share: "/export"}, "[fd00::1]:/export"},
	} {
		got, err := Parse(tc.ctx)
		if err != nil {
			t.Errorf("%v: %v", tc.ctx, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%v: got %+v, want %+v", tc.ctx, got, tc.want)
		}
		if got.Source() != tc.source {
			t.Errorf("%v: source %q, want %q", tc.ctx, got.Source(), tc.source)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		ctx  map[string]string
		want []string
	}{
		{map[string]string{}, []string{"source: required"}},
		{map[string]string{"source": "//server"}, []string{`source: "//server": want //server/share`}},
		{map[string]string{"source": "//server/a/b"}, []string{"a share's name has no slash"}},
		{map[string]string{"source": "//bad_host!/data"}, []string{`server "bad_host!" is not a host name or an IP address`}},
		{map[string]string{"source": "//-x.example/data"}, []string{`server "-x.example"`}},
		{map[string]string{"source": "ftp://x/y"}, []string{"want //server/share (SMB) or server:/export (NFS)"}},
		{map[string]string{"source": "nfs:/a/../b"}, []string{"the export path is not clean"}},
		{map[string]string{"source": "//s/d", "subDir": "../up"}, []string{`subDir: "../up": want a relative path inside the share`}},
		{map[string]string{"source": "//s/d", "subDir": "/abs"}, []string{`subDir: "/abs"`}},
		{map[string]string{"source": "//s/d", "subdir": "x", "server": "y"}, []string{"subdir: unknown key", "server: unknown key"}},
	} {
		_, err := Parse(tc.ctx)
		if err == nil {
			t.Errorf("%v: accepted", tc.ctx)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error lacks %q: %v", tc.ctx, w, err)
			}
		}
	}
}

func TestParseSecret(t *testing.T) {
	c, err := ParseSecret(mountopts.SMB, map[string]string{"username": "alice", "password": "hunter2", "domain": "CORP"})
	if err != nil || c.Username != "alice" || c.Domain != "CORP" || string(c.Password) != "hunter2" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if s := fmt.Sprintf(verb, c); strings.Contains(s, "hunter2") {
			t.Errorf("%s prints the password: %s", verb, s)
		}
	}
	if c, err := ParseSecret(mountopts.SMB, nil); err != nil || c != (Credentials{}) {
		t.Errorf("no Secret: %+v %v, want guest", c, err)
	}
	_, err = ParseSecret(mountopts.SMB, map[string]string{"password": "hunter2", "user": "x"})
	for _, w := range []string{`no "username" key`, `key "user": unknown`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error echoes the password: %v", err)
	}
	if _, err := ParseSecret(mountopts.NFS, map[string]string{"username": "x"}); err == nil {
		t.Error("credentials for NFS accepted")
	}
}
