// Package cloudinit holds the user-data templates of cloud-init/ and fills them in for tools and tests: the
// #cloud-config that delivers a NodeConfig and the network-config for a static node address. Users fill the same
// files in by hand.
package cloudinit

import (
	_ "embed"
	"fmt"
	"net/netip"
	"strings"

	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"sigs.k8s.io/yaml"
)

var (
	//go:embed nodeconfig.cloud-config.yaml
	nodeConfigTemplate string
	//go:embed network-config.yaml
	networkConfigTemplate string
)

// Join is what the NodeConfig template needs.
type Join struct {
	Endpoint  string // https://host:port
	Token     bootstraptoken.Token
	CACertPin capin.Pin
	NodeName  string
}

// UserData is nodeconfig.cloud-config.yaml filled in with j.
func UserData(j Join) string {
	return strings.NewReplacer("__ENDPOINT__", j.Endpoint, "__TOKEN__", j.Token.Value(), "__CA_PIN__", string(j.CACertPin),
		"__NODE_NAME__", j.NodeName).Replace(nodeConfigTemplate)
}

// WriteFile is one write_files entry.
type WriteFile struct {
	Path, Owner, Permissions, Content string
}

// WriteFiles parses the write_files entries of #cloud-config user data, strictly.
func WriteFiles(userData string) ([]WriteFile, error) {
	var cc struct {
		WriteFiles []WriteFile `json:"write_files"`
	}
	if err := yaml.UnmarshalStrict([]byte(userData), &cc); err != nil {
		return nil, fmt.Errorf("cloud-config: %w", err)
	}
	return cc.WriteFiles, nil
}

// NodeConfig is the NodeConfig drop-in that UserData(j) makes cloud-init write: the content of its one
// write_files entry.
func NodeConfig(j Join) (string, error) {
	files, err := WriteFiles(UserData(j))
	if err != nil {
		return "", err
	}
	if len(files) != 1 {
		return "", fmt.Errorf("nodeconfig.cloud-config.yaml: %d write_files entries, want 1", len(files))
	}
	return files[0].Content, nil
}

// Network is what the network-config template needs.
type Network struct {
	MAC     string       // the NIC's MAC address
	Address netip.Prefix // the node's address and prefix length
	Gateway netip.Addr
}

// NetworkConfig is network-config.yaml filled in with n.
func NetworkConfig(n Network) string {
	return strings.NewReplacer("__MAC__", n.MAC, "__ADDRESS__", n.Address.String(), "__GATEWAY__", n.Gateway.String()).
		Replace(networkConfigTemplate)
}
