package join

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/layout"
)

func TestScrubTokenKeepsTheRest(t *testing.T) {
	in := `# written by cloud-init
apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://10.0.0.1:6443
    discovery:
      token: abcdef.0123456789abcdef # the bootstrap token
      caCertHashes:
        - sha256:00
  node:
    name: a
`
	out, changed, err := scrubToken([]byte(in))
	if err != nil || !changed {
		t.Fatalf("changed %v, err %v", changed, err)
	}
	s := string(out)
	if strings.Contains(s, "0123456789abcdef") || strings.Contains(s, "token:") {
		t.Errorf("token left:\n%s", s)
	}
	for _, keep := range []string{"# written by cloud-init", "endpoint: https://10.0.0.1:6443", "- sha256:00", "name: a"} {
		if !strings.Contains(s, keep) {
			t.Errorf("lost %q:\n%s", keep, s)
		}
	}
	if _, changed, _ := scrubToken(out); changed {
		t.Error("a second scrub changed the file again")
	}
	if _, changed, err := scrubToken([]byte("apiVersion: x\nspec: {node: {name: b}}\n")); changed || err != nil {
		t.Errorf("a drop-in without a token: changed %v, err %v", changed, err)
	}
}

// cleanup is best effort on a node that has joined: a token file that cannot be removed and a drop-in that cannot
// be parsed are warnings, named in the phase's detail, and the rest is still removed; hidden files (an editor's
// backup) are skipped, as the config loader skips them.
func TestCleanupIsBestEffort(t *testing.T) {
	dir := t.TempDir()
	dropIns := filepath.Join(dir, "config.d")
	os.MkdirAll(dropIns, 0o700)
	inline := "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  controlPlane:\n    discovery:\n      token: abcdef.0123456789abcdef\n"
	os.WriteFile(filepath.Join(dropIns, "10-user-data.yaml"), []byte(inline), 0o600)
	os.WriteFile(filepath.Join(dropIns, "20-broken.yaml"), []byte("spec: [unclosed\n"), 0o600)
	os.WriteFile(filepath.Join(dropIns, ".10-user-data.yaml.swp"), []byte("\x00binary: [garbage\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "not-a-dir"), nil, 0o600)
	boot := filepath.Join(dir, "bootstrap-kubelet.conf")
	os.WriteFile(boot, []byte("x"), 0o600)

	var logs strings.Builder
	s := &state{log: slog.New(slog.NewTextHandler(&logs, nil)), cfg: Config{DropInDir: dropIns,
		Paths:      layout.Paths{BootstrapKubeconfig: boot},
		NodeConfig: &nodeconfig.Config{ControlPlane: nodeconfig.ControlPlane{Discovery: nodeconfig.Discovery{TokenFile: filepath.Join(dir, "not-a-dir", "token")}}}}}
	detail, err := cleanup(context.Background(), s)
	if err != nil {
		t.Fatalf("cleanup failed the phase: %v", err)
	}
	if _, err := os.Stat(boot); !os.IsNotExist(err) {
		t.Error("the bootstrap kubeconfig is still there")
	}
	if data, _ := os.ReadFile(filepath.Join(dropIns, "10-user-data.yaml")); strings.Contains(string(data), "0123456789abcdef") {
		t.Error("the inline token was not scrubbed")
	}
	for _, want := range []string{"not-a-dir/token", "20-broken.yaml"} {
		if !strings.Contains(detail, want) || !strings.Contains(logs.String(), want) {
			t.Errorf("%s not named as a warning: detail %q\nlog: %s", want, detail, logs.String())
		}
	}
	if strings.Contains(detail+logs.String(), ".swp") {
		t.Errorf("the hidden backup was read: %s %s", detail, logs.String())
	}
}
