// Package cloudinit holds the user-data templates of cloud-init/; its test fills them in and checks that the
// agent's config loader accepts the result.
package cloudinit

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"berth.dev/berth/agent/config"
)

func TestNodeConfigTemplate(t *testing.T) {
	raw, err := os.ReadFile("nodeconfig.cloud-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(raw), "#cloud-config\n") {
		t.Fatal("the template must start with #cloud-config")
	}
	filled := strings.NewReplacer(
		"__ENDPOINT__", "https://10.0.0.1:6443",
		"__TOKEN__", "abcdef.0123456789abcdef",
		"__CA_PIN__", "sha256:125afbfada2e3a34d8de20f795abc48a18459212cf7dd07dee460005278b32b9",
		"__NODE_NAME__", "node-a",
	).Replace(string(raw))
	var cc struct {
		WriteFiles []struct {
			Path, Owner, Permissions, Content string
		} `json:"write_files"`
	}
	if err := yaml.UnmarshalStrict([]byte(filled), &cc); err != nil {
		t.Fatalf("the filled-in template is not the cloud-config expected: %v", err)
	}
	if len(cc.WriteFiles) != 1 {
		t.Fatalf("write_files has %d entries, want 1", len(cc.WriteFiles))
	}
	f := cc.WriteFiles[0]
	if !strings.HasPrefix(f.Path, config.DropInDir+"/") || f.Permissions != "0600" || f.Owner != "root:root" {
		t.Errorf("drop-in %s %s %s: want under %s, 0600, root:root (it holds the token)", f.Path, f.Permissions, f.Owner, config.DropInDir)
	}
	c, err := config.Merge([]config.Source{{Name: f.Path, Data: []byte(f.Content)}})
	if err != nil {
		t.Fatalf("the agent rejects the template's NodeConfig: %v", err)
	}
	if c.Spec.Node.Name != "node-a" || c.Spec.ControlPlane.Endpoint != "https://10.0.0.1:6443" {
		t.Errorf("decoded %+v", c.Spec)
	}
	// Unfilled, the agent must refuse it with the fields named (placeholders are not valid values).
	_, err = config.Merge([]config.Source{{Name: f.Path, Data: []byte(strings.SplitN(string(raw), "content: |\n", 2)[1])}})
	if err == nil {
		t.Fatal("the unfilled template was accepted")
	}
	for _, field := range []string{"spec.controlPlane.endpoint", "spec.controlPlane.discovery.token", "caCertHashes[0]", "spec.node.name"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("unfilled template: %q not named in %v", field, err)
		}
	}
}
