package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/lb/lbstatus"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(`apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://127.0.0.1:6443
    discovery:
      tokenFile: /etc/berth/token
      caCertHashes: ["sha256:125afbfada2e3a34d8de20f795abc48a18459212cf7dd07dee460005278b32b9"]
`), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(`apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: 10.0.0.1
    discovery:
      token: abcdef.0123456789abcdeX
  cni: {mode: calico}
`), 0o600)
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec: {controlPlane: {endpiont: x}}\n"), 0o600)

	// Preflight against a port where nothing listens (loopback only): exit 11 with the cause and what to do.
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("abcdef.0123456789abcdef\n"), 0o600)
	closed := filepath.Join(dir, "closed.yaml")
	os.WriteFile(closed, []byte(strings.Replace(strings.Replace(mustRead(t, good), "https://127.0.0.1:6443", "https://127.0.0.1:1", 1),
		"/etc/berth/token", tokenFile, 1)), 0o600)

	// A status file whose code no exit status can carry (exit codes are 0-255): status must not exit 0 (300 mod 256
	// is 44, and 256 would be 0).
	outOfRange := filepath.Join(dir, "state-300")
	os.MkdirAll(outOfRange, 0o700)
	os.WriteFile(filepath.Join(outOfRange, "status.json"), []byte(`{"node":"n","result":"failed","exitCode":300,"error":"x","started":"2026-01-01T00:00:00Z"}`), 0o600)

	// Files that cannot be a NodeConfig: a FIFO (which a plain read would wait on forever), one over MaxSize, and one
	// whose unknown key is a megabyte long (cut short in the message).
	files := filepath.Join(dir, "files") // not the drop-in directory the join case reads
	os.Mkdir(files, 0o700)
	fifo := filepath.Join(files, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(files, "huge.yaml")
	os.WriteFile(huge, bytes.Repeat([]byte("#"), config.MaxSize+1), 0o600)
	longKey := filepath.Join(files, "long-key.yaml")
	os.WriteFile(longKey, []byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\n? "+strings.Repeat("k", 1<<19)+"\n: 1\n"), 0o600)

	lbGood, lbBad := filepath.Join(files, "lb.yaml"), filepath.Join(files, "lb-bad.yaml")
	os.WriteFile(lbGood, []byte("apiVersion: lb.berth.dev/v1alpha1\nkind: LoadBalancerConfig\nspec:\n  pools:\n    - name: public\n      addresses: [203.0.113.0/28]\n"), 0o600)
	os.WriteFile(lbBad, []byte("apiVersion: lb.berth.dev/v1alpha1\nkind: LoadBalancerConfig\nspec:\n  pool: []\n  pools:\n    - name: public\n      addresses: [203.0.113.1/28]\n"), 0o600)

	lbOK, lbFailed := filepath.Join(dir, "lb-good.json"), filepath.Join(dir, "lb-failed.json")
	lbst := &lbstatus.Status{Identity: "lb-1", Mode: "floatingIP", Synced: time.Now(), LiveHosts: []string{"lb-1", "lb-2"}, Announced: []string{"203.0.113.1"},
		Frontends: []lbstatus.Frontend{{Frontend: "203.0.113.1:80/TCP", Backends: []string{"node-1", "node-2"}}}}
	if err := lbstatus.Write(lbOK, lbst); err != nil {
		t.Fatal(err)
	}
	lbst.Error, lbst.ProbesDown = "dataplane: boom", []string{"http://10.0.3.11:10256/healthz"}
	if err := lbstatus.Write(lbFailed, lbst); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"lb validate", []string{"lb", "validate", "-f", lbGood}, 0, []string{"valid"}},
		{"lb validate: every problem", []string{"lb", "validate", "-f", lbBad}, exitInvalidConfig, []string{`unknown field "spec.pool"`, "spec.pools[0].addresses[0]", "host bits", "2 problem(s)"}},
		{"lb controller with a bad config", []string{"lb", "controller", "-config", lbBad}, exitInvalidConfig, []string{"spec.pools[0].addresses[0]"}},
		{"lb controller without a config", []string{"lb", "controller"}, exitUsage, []string{"-config FILE is required"}},
		{"lb alone", []string{"lb"}, exitUsage, []string{"usage:"}},
		{"a FIFO", []string{"config", "validate", "-f", fifo}, exitInvalidConfig, []string{"not a regular file"}},
		{"too large", []string{"config", "validate", "-f", huge}, exitInvalidConfig, []string{"larger than 1048576 bytes"}},
		{"a megabyte-long unknown key", []string{"config", "validate", "-f", longKey}, exitInvalidConfig, []string{"kkk… (", "bytes)"}},
		{"valid", []string{"config", "validate", "-f", good}, 0, []string{"valid"}},
		{"invalid", []string{"config", "validate", "-f", bad}, exitInvalidConfig, []string{"spec.controlPlane.endpoint", "spec.controlPlane.discovery.token",
			"spec.controlPlane.discovery.caCertHashes", "spec.cni.mode", "4 problem(s)"}},
		{"typo", []string{"config", "validate", "-f", typo}, exitInvalidConfig, []string{`unknown field "spec.controlPlane.endpiont"`, "spec.controlPlane.endpoint: Required value", "spec.controlPlane.discovery.token: Required value", "4 problem(s)"}},
		{"missing file", []string{"config", "validate", "-f", filepath.Join(dir, "nope")}, exitInvalidConfig, []string{"no such file"}},
		{"usage", []string{"leave"}, 64, []string{"usage:"}},
		{"join: a bad drop-in is named with its field", []string{"join", "-config-dir", dir, "-user-data", filepath.Join(dir, "none"), "-state-dir", filepath.Join(dir, "state")}, exitInvalidConfig, []string{"typo.yaml", `unknown field "spec.controlPlane.endpiont"`, `spec.cni.mode: Unsupported value: "calico"`}},
		{"status without a run", []string{"status", "-state-dir", filepath.Join(dir, "state")}, 1, []string{"no status"}},
		{"preflight unreachable", []string{"preflight", "-f", closed}, 11, []string{"preflight dns    ok", "preflight tcp:", "check routes and firewalls"}},
		{"preflight missing token file", []string{"preflight", "-f", good}, exitInvalidConfig, []string{"tokenFile"}},
		{"validate with an extra argument", []string{"config", "validate", "-f", good, "extra"}, exitUsage, []string{"unexpected argument \"extra\""}},
		{"preflight with an extra argument", []string{"preflight", "-f", good, "x"}, exitUsage, []string{"unexpected argument \"x\""}},
		{"config without validate", []string{"config"}, exitUsage, []string{"usage:"}},
		{"status of a run with an out-of-range code", []string{"status", "-state-dir", outOfRange}, exitInternal, []string{"exit code 300"}},
		{"status of an LB host", []string{"status", "-state-dir", filepath.Join(dir, "state"), "-lb-status-file", lbOK}, exitOK,
			[]string{"LB host lb-1 (floatingIP mode)", "live LB hosts: lb-1, lb-2", "announced here: 203.0.113.1", "203.0.113.1:80/TCP  node-1, node-2"}},
		{"status of an LB host whose last apply failed", []string{"status", "-state-dir", filepath.Join(dir, "state"), "-lb-status-file", lbFailed}, exitInternal,
			[]string{"last apply failed: dataplane: boom", "probes down: http://10.0.3.11:10256/healthz"}},
	} {
		var out, errOut bytes.Buffer
		code := run(c.args, &out, &errOut)
		all := out.String() + errOut.String()
		if len(all) > 8<<10 {
			t.Errorf("%s: %d bytes of output; bad values are cut short", c.name, len(all))
		}
		if code != c.code {
			t.Errorf("%s: exit %d, want %d\n%s", c.name, code, c.code, all)
		}
		for _, w := range c.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s: output lacks %q:\n%s", c.name, w, all)
			}
		}
		if strings.Contains(all, "0123456789abcde") {
			t.Errorf("%s: the token leaked:\n%s", c.name, all)
		}
	}
}

func mustRead(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
