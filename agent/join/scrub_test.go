package join

import (
	"reflect"

	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"

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

// The scrub's properties on any drop-in: when it changes one, the result parses, holds no
// spec.controlPlane.discovery.token, keeps every other value of the document, and a second scrub changes nothing.
func FuzzScrubToken(f *testing.F) {
	f.Add([]byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  controlPlane:\n    discovery:\n      token: abcdef.0123456789abcdef # c\n      caCertHashes: [x]\n"))
	f.Add([]byte(`{"spec":{"controlPlane":{"discovery":{"token":"abcdef.0123456789abcdef","tokenFile":""}}}}`))
	f.Add([]byte("spec:\n  controlPlane: {discovery: {token: a}}\n  node: {name: n}\n"))
	f.Add([]byte("spec: [1, 2]\n"))
	f.Add([]byte("# only a comment\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, changed, err := scrubToken(data)
		if err != nil || !changed {
			return
		}
		var before, after map[string]any
		if err := yamlv3.Unmarshal(data, &before); err != nil {
			t.Fatalf("scrubbed a document that does not parse: %v", err)
		}
		if err := yamlv3.Unmarshal(out, &after); err != nil {
			t.Fatalf("the scrubbed document does not parse: %v\n%s", err, out)
		}
		disc := func(m map[string]any) map[string]any {
			spec, _ := m["spec"].(map[string]any)
			cp, _ := spec["controlPlane"].(map[string]any)
			d, _ := cp["discovery"].(map[string]any)
			return d
		}
		if d := disc(after); d != nil {
			if _, ok := d["token"]; ok {
				t.Fatalf("token left:\n%s", out)
			}
		}
		if d := disc(before); d != nil {
			delete(d, "token")
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("the scrub changed more than the token:\nbefore %v\nafter  %v", before, after)
		}
		if _, again, err := scrubToken(out); again || err != nil {
			t.Fatalf("a second scrub: changed %v, err %v", again, err)
		}
	})
}
