package config

import (
	"fmt"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
)

// Internal converts a validated v1alpha1 NodeConfig into the internal one every phase and renderer reads, and
// applies the defaults (nodeconfig.Config.ApplyDefaults). Errors name the field (they can only come from a config
// that skipped validation). A new API version adds its own conversion here.
func Internal(in *v1alpha1.NodeConfig, d nodeconfig.Defaults) (*nodeconfig.Config, error) {
	s := in.Spec
	c := &nodeconfig.Config{
		ControlPlane: nodeconfig.ControlPlane{Endpoint: s.ControlPlane.Endpoint, Discovery: nodeconfig.Discovery{
			TokenFile: s.ControlPlane.Discovery.TokenFile,
			CABundle:  []byte(s.ControlPlane.Discovery.CABundle),
		}},
		Node:       nodeconfig.Node{Name: s.Node.Name, Labels: s.Node.Labels, Taints: s.Node.Taints},
		Kubelet:    nodeconfig.Kubelet{Config: s.Kubelet.Config, ExtraArgs: s.Kubelet.ExtraArgs},
		Containerd: nodeconfig.Containerd{SandboxImage: s.Containerd.SandboxImage, RegistryMirrors: s.Containerd.RegistryMirrors},
		CNI:        nodeconfig.CNI{Mode: s.CNI.Mode},
		Sysctls:    s.Sysctls,
	}
	if len(c.ControlPlane.Discovery.CABundle) == 0 {
		c.ControlPlane.Discovery.CABundle = nil
	}
	// A scrubbed token (a copy cleaned after the join) is no token: only a joined node's config validates with one.
	if t := s.ControlPlane.Discovery.Token.Reveal(); t != "" && !bootstraptoken.Scrubbed(t) {
		tok, err := bootstraptoken.Parse(t)
		if err != nil {
			return nil, fmt.Errorf("spec.controlPlane.discovery.token: %w", err)
		}
		c.ControlPlane.Discovery.Token = tok
	}
	for i, h := range s.ControlPlane.Discovery.CACertHashes {
		p, err := capin.Parse(h)
		if err != nil {
			return nil, fmt.Errorf("spec.controlPlane.discovery.caCertHashes[%d]: %w", i, err)
		}
		c.ControlPlane.Discovery.Pins = append(c.ControlPlane.Discovery.Pins, p)
	}
	toml, err := s.Containerd.ParseConfigTOML()
	if err != nil {
		return nil, fmt.Errorf("spec.containerd.configTOML: %w", err)
	}
	c.Containerd.ConfigTOML = toml
	if err := c.ApplyDefaults(d); err != nil {
		return nil, err
	}
	return c, nil
}
