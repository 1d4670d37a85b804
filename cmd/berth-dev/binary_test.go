package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/dev/toolcache"
)

// devTool is berth-dev as a user has it: built, then copied on its own to another directory, and run from there
// with a tool cache of its own (which holds the pinned builds given: tool name → bin dir) and no BERTH_K8S_BIN or
// BERTH_COREDNS_BIN, so that it finds nothing through the source tree or the test's environment.
type devTool struct {
	path, cwd string
	env       []string
	k8sBin    string // where the tool cache's Kubernetes build resolves
}

func newDevTool(t *testing.T, tools map[string]string, env ...string) devTool {
	t.Helper()
	build := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(build, "berth-dev"), "berth.dev/berth/cmd/berth-dev")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build berth-dev: %v\n%s", err, out)
	}
	elsewhere := t.TempDir()
	data, err := os.ReadFile(filepath.Join(build, "berth-dev"))
	if err != nil {
		t.Fatal(err)
	}
	d := devTool{path: filepath.Join(elsewhere, "berth-dev"), cwd: t.TempDir()}
	if err := os.WriteFile(d.path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(build); err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	// The rootfs cache is shared with the test's own (a cold mmdebstrap takes a minute), not the tools.
	rootfs := filepath.Join(toolcache.Dir(), "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rootfs, filepath.Join(cache, "rootfs")); err != nil {
		t.Fatal(err)
	}
	versions := map[string]string{"k8s": toolcache.KubernetesVersion, "coredns": toolcache.CoreDNSVersion, "victorialogs": toolcache.VictoriaLogsVersion}
	for tool, bin := range tools {
		build := filepath.Join(cache, tool, "v"+versions[tool]+"-fromtest")
		if err := os.MkdirAll(build, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(bin, filepath.Join(build, "bin")); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(build, ".complete"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if tool == "k8s" {
			d.k8sBin = filepath.Join(build, "bin")
		}
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_K8S_BIN=") && !strings.HasPrefix(kv, "BERTH_COREDNS_BIN=") && !strings.HasPrefix(kv, "BERTH_VICTORIALOGS_BIN=") && !strings.HasPrefix(kv, "BERTH_CACHE=") {
			d.env = append(d.env, kv)
		}
	}
	d.env = append(append(d.env, "BERTH_CACHE="+cache), env...)
	return d
}

// run runs it with args; stdout is returned, stderr logged.
func (d devTool) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, stderr bytes.Buffer
	cmd := exec.Command(d.path, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = d.cwd, d.env, &out, &stderr
	err := cmd.Run()
	// Its log only when it failed: a passing run's log would push a failing test's messages out of a CI excerpt.
	if err != nil && stderr.Len() > 0 {
		t.Logf("berth-dev %s (stderr):\n%s", strings.Join(args, " "), stderr.String())
	}
	return out.String(), err
}
