package config

import (
	"strings"
	"testing"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/layout"
)

func decodeDoc(t *testing.T, doc string) *v1alpha1.NodeConfig {
	t.Helper()
	c, err := v1alpha1.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const minimal = `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://cp.example:6443
    discovery:
      token: abcdef.0123456789abcdef
      caCertHashes: ["SHA256:` + "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB" + `"]
`

// Every default is applied here: the node name from the hostname, the image's pause image, bridge mode on cbr0.
// The token and the pins arrive parsed.
func TestDefaultsInOnePlace(t *testing.T) {
	c, err := Internal(decodeDoc(t, minimal), nodeconfig.Defaults{Hostname: "host-1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Name != "host-1" || c.Containerd.SandboxImage != layout.PauseImage || c.CNI.Mode != nodeconfig.CNIBridge || c.CNI.Bridge != nodeconfig.DefaultBridge {
		t.Errorf("defaults: name %q, sandbox %q, cni %+v", c.Node.Name, c.Containerd.SandboxImage, c.CNI)
	}
	if c.ControlPlane.Discovery.Token.ID() != "abcdef" || len(c.ControlPlane.Discovery.Pins) != 1 ||
		string(c.ControlPlane.Discovery.Pins[0]) != "sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("discovery: token %v, pins %v", c.ControlPlane.Discovery.Token, c.ControlPlane.Discovery.Pins)
	}
	if c.ControlPlane.Discovery.CABundle != nil || c.Containerd.ConfigTOML != nil {
		t.Errorf("unset fields are not nil: bundle %q, toml %v", c.ControlPlane.Discovery.CABundle, c.Containerd.ConfigTOML)
	}

	set := decodeDoc(t, minimal+`  node: {name: node-7}
  containerd: {sandboxImage: registry.example/pause:3.10, configTOML: "[grpc]\nmax_recv_message_size = 1"}
  cni: {mode: none}
`)
	c, err = Internal(set, nodeconfig.Defaults{Hostname: "host-1", Bridge: "br-test"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Node.Name != "node-7" || c.Containerd.SandboxImage != "registry.example/pause:3.10" || c.CNI.Mode != nodeconfig.CNINone || c.CNI.Bridge != "br-test" {
		t.Errorf("set values: name %q, sandbox %q, cni %+v", c.Node.Name, c.Containerd.SandboxImage, c.CNI)
	}
	if grpc, _ := c.Containerd.ConfigTOML["grpc"].(map[string]any); grpc["max_recv_message_size"] != int64(1) {
		t.Errorf("configTOML parsed as %v", c.Containerd.ConfigTOML)
	}
}

// A config that skipped validation still fails with the field named; no hostname and no name is an error.
func TestConversionErrorsNameTheField(t *testing.T) {
	for _, c := range []struct{ name, doc, want string }{
		{"bad pin", strings.Replace(minimal, "SHA256:", "md5:", 1), "spec.controlPlane.discovery.caCertHashes[0]"},
		{"bad token", strings.Replace(minimal, "abcdef.0123456789abcdef", "not-a-token", 1), "spec.controlPlane.discovery.token"},
		{"bad toml", minimal + "  containerd: {configTOML: \"a = = 1\"}\n", "spec.containerd.configTOML: line 1"},
	} {
		if _, err := Internal(decodeDoc(t, c.doc), nodeconfig.Defaults{Hostname: "h"}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := Internal(decodeDoc(t, minimal), nodeconfig.Defaults{}); err == nil || !strings.Contains(err.Error(), "spec.node.name is empty") {
		t.Errorf("no name: %v", err)
	}
	// The token never appears in a conversion error.
	if _, err := Internal(decodeDoc(t, strings.Replace(minimal, "abcdef.0123456789abcdef", "abcdef.0123456789ABCDEF", 1)), nodeconfig.Defaults{Hostname: "h"}); err == nil || strings.Contains(err.Error(), "0123456789ABCDEF") {
		t.Errorf("bad token error: %v", err)
	}
}
