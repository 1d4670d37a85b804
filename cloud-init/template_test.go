package cloudinit

import (
	"net/netip"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"berth.dev/berth/agent/config"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/layout"
)

func TestNodeConfigTemplate(t *testing.T) {
	if !strings.HasPrefix(nodeConfigTemplate, "#cloud-config\n") {
		t.Fatal("the template must start with #cloud-config")
	}
	tok, err := bootstraptoken.Parse("abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	j := Join{Endpoint: "https://10.0.0.1:6443", Token: tok, NodeName: "node-a",
		CACertPin: "sha256:125afbfada2e3a34d8de20f795abc48a18459212cf7dd07dee460005278b32b9"}
	files, err := WriteFiles(UserData(j))
	if err != nil {
		t.Fatalf("the filled-in template is not the cloud-config expected: %v", err)
	}
	if len(files) != 1 {
		t.Fatalf("write_files has %d entries, want 1", len(files))
	}
	f := files[0]
	if !strings.HasPrefix(f.Path, layout.DropInDir+"/") || f.Permissions != "0600" || f.Owner != "root:root" {
		t.Errorf("drop-in %s %s %s: want under %s, 0600, root:root (it holds the token)", f.Path, f.Permissions, f.Owner, layout.DropInDir)
	}
	nc, err := NodeConfig(j)
	if err != nil || nc != f.Content {
		t.Fatalf("NodeConfig = %q, %v; want the write_files content", nc, err)
	}
	c, err := config.Merge([]config.Source{{Name: f.Path, Data: []byte(nc)}})
	if err != nil {
		t.Fatalf("the agent rejects the template's NodeConfig: %v", err)
	}
	if c.Spec.Node.Name != "node-a" || c.Spec.ControlPlane.Endpoint != "https://10.0.0.1:6443" || c.Spec.ControlPlane.Discovery.Token.Reveal() != tok.Value() {
		t.Errorf("decoded %+v", c.Spec)
	}

	// Unfilled, the agent names every placeholder's field.
	_, err = config.Merge([]config.Source{{Name: f.Path, Data: []byte(strings.SplitN(nodeConfigTemplate, "content: |\n", 2)[1])}})
	if err == nil {
		t.Fatal("the unfilled template was accepted")
	}
	for _, field := range []string{"spec.controlPlane.endpoint", "spec.controlPlane.discovery.token", "caCertHashes[0]", "spec.node.name"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("unfilled template: %q not named in %v", field, err)
		}
	}
}

func TestNetworkConfigTemplate(t *testing.T) {
	filled := NetworkConfig(Network{MAC: "52:54:00:88:00:0b", Address: netip.MustParsePrefix("10.88.0.11/24"), Gateway: netip.MustParseAddr("10.88.0.1")})
	if strings.Contains(filled, "__") {
		t.Fatalf("placeholder left:\n%s", filled)
	}
	var nc struct {
		Network struct {
			Version   int `json:"version"`
			Ethernets map[string]struct {
				Match struct {
					MACAddress string `json:"macaddress"`
				} `json:"match"`
				SetName   string   `json:"set-name"`
				Addresses []string `json:"addresses"`
				Gateway4  string   `json:"gateway4"`
			} `json:"ethernets"`
		} `json:"network"`
	}
	if err := yaml.UnmarshalStrict([]byte(filled), &nc); err != nil {
		t.Fatalf("network-config: %v\n%s", err, filled)
	}
	e, ok := nc.Network.Ethernets["node0"]
	if nc.Network.Version != 2 || !ok || e.Match.MACAddress != "52:54:00:88:00:0b" || len(e.Addresses) != 1 || e.Addresses[0] != "10.88.0.11/24" ||
		e.Gateway4 != "10.88.0.1" {
		t.Errorf("network-config decoded as %+v", nc)
	}
}
