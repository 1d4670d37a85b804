// Package nodeconfig is the agent's internal NodeConfig: the one type every phase and renderer reads. agent/config
// converts the versioned API into it (node.berth.dev/v1alpha1 today; a v1beta1 adds a conversion there and
// touches nothing else), and every default is applied here, in one place (ApplyDefaults): the node name, the
// sandbox image, the CNI mode and bridge. Values arrive parsed (the token, the CA pins and bundle, containerd's
// TOML), so consumers never re-parse or re-default. nodeadm's internal API is the model. This package does not
// import the versioned API (test/layers checks it).
package nodeconfig

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"berth.dev/berth/internal/node/layout"
)

// CNI modes.
const (
	// CNIBridge: berth writes a bridge + host-local config from the Node's podCIDR and routes between nodes
	// (kubenet style). The default.
	CNIBridge = "bridge"
	// CNINone: a CNI DaemonSet brings its own config.
	CNINone = "none"
)

// DefaultBridge is the CNI bridge's name (kubenet's).
const DefaultBridge = "cbr0"

// Config is a node's configuration with every default applied.
type Config struct {
	ControlPlane ControlPlane
	Node         Node
	Kubelet      Kubelet
	Containerd   Containerd
	CNI          CNI
	// Sysctls are kernel settings, name → value.
	Sysctls map[string]string
}

// ControlPlane is where the control plane is and how to trust it.
type ControlPlane struct {
	Endpoint  string
	Discovery Discovery
}

// Discovery is the bootstrap credential and the trust anchors.
type Discovery struct {
	// Token is the inline bootstrap token (zero when it comes from TokenFile, or once the node has joined and the
	// token was scrubbed). TokenFile is read when the token is needed (preflight.Token).
	Token     bootstraptoken.Token
	TokenFile string
	// Pins are the CA public-key pins; CABundle the CA certificates (PEM). One of them is set before the join.
	Pins     []capin.Pin
	CABundle []byte
}

// Node is the Node's identity.
type Node struct {
	// Name is spec.node.name, else the hostname (Defaults.Hostname).
	Name   string
	Labels map[string]string
	Taints []corev1.Taint
}

// Kubelet is the user's part of the kubelet's configuration.
type Kubelet struct {
	// Config is a partial KubeletConfiguration merged over berth's defaults (validated already).
	Config    json.RawMessage
	ExtraArgs map[string]string
}

// Containerd is the user's part of containerd's configuration.
type Containerd struct {
	// SandboxImage is spec.containerd.sandboxImage, else the pause image every berth image ships.
	SandboxImage    string
	RegistryMirrors map[string][]string
	// ConfigTOML is the parsed TOML the user merges over berth's containerd config (nil: none).
	ConfigTOML map[string]any
}

// CNI is pod networking.
type CNI struct {
	// Mode is CNIBridge (default) or CNINone.
	Mode string
	// Bridge is the bridge's name (DefaultBridge; the host test tier gives each node its own).
	Bridge string
}

// Defaults are what the node supplies where the configuration is silent.
type Defaults struct {
	// Hostname is the node name when spec.node.name is empty.
	Hostname string
	// Bridge overrides DefaultBridge (the host test tier).
	Bridge string
}

// ApplyDefaults fills what the configuration left empty. It is the only place berth's defaults are set.
func (c *Config) ApplyDefaults(d Defaults) error {
	if c.Node.Name == "" {
		c.Node.Name = d.Hostname
	}
	if c.Node.Name == "" {
		return fmt.Errorf("spec.node.name is empty and the hostname is unknown")
	}
	if c.Containerd.SandboxImage == "" {
		c.Containerd.SandboxImage = layout.PauseImage
	}
	if c.CNI.Mode == "" {
		c.CNI.Mode = CNIBridge
	}
	c.CNI.Bridge = d.Bridge
	if c.CNI.Bridge == "" {
		c.CNI.Bridge = DefaultBridge
	}
	return nil
}
