package node

import (
	"encoding/json"
	"fmt"

	"github.com/pelletier/go-toml/v2"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/mergepatch"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/render"
	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/layout"
)

// Profile is the distro profile the host tier renders with: this host is Debian 12 with its containerd 1.6.
const Profile = "debian-12"

// Paths are the node's files, all inside its directory: the agent (in the host's mount namespace) and containerd
// and the kubelet (in the node's) see them at the same paths. Only the kubelet's root dir and containerd's
// root/state stay at their defaults, under the node's own /var/lib and /run.
func (n *Node) Paths() layout.Paths {
	return layout.Paths{
		CACert:              n.path("etc", "ca.crt"),
		BootstrapKubeconfig: n.path("etc", "bootstrap-kubelet.conf"),
		Kubeconfig:          n.path("kubelet.conf"),
		KubeletConfig:       n.path("etc", "kubelet.yaml"),
		KubeletCertDir:      n.path("pki"),
		KubeletDropIn:       n.path("systemd", "kubelet.service.d", "10-berth.conf"),
		KubeProxyConfig:     n.path("etc", "kube-proxy.yaml"),
		KubeProxyDropIn:     n.path("systemd", "kube-proxy.service.d", "10-berth.conf"),
		ContainerdConfig:    n.path("etc", "containerd.toml"),
		ContainerdSocket:    n.ContainerdSocket(),
		RegistryHostsDir:    n.path("etc", "certs.d"),
		CNIConfDir:          n.path("net.d"),
		Sysctls:             n.path("etc", "sysctl.conf"),
		ShippedImages:       n.path("images"),
	}
}

// Tune merges what this host needs into a NodeConfig spec; these are test-host facts, not production defaults:
// cgroup v1 with the cgroupfs driver and a cgroup root inside the node's tree, free ports, the node's own
// resolv.conf, containerd without negative OOM scores (no CAP_SYS_RESOURCE) and with its ttrpc socket and
// network namespaces inside the node's directories.
func (n *Node) Tune(spec *v1alpha1.NodeConfigSpec) error {
	address := "127.0.0.1"
	if n.cfg.NodeIP.IsValid() {
		address = n.cfg.NodeIP.String()
	}
	kubelet := map[string]any{
		"cgroupDriver":       "cgroupfs",
		"failCgroupV1":       false,
		"failSwapOn":         false,
		"cgroupRoot":         "/" + n.host.Cgroup + "/pods",
		"address":            address,
		"port":               n.ports[0],
		"healthzPort":        n.ports[1],
		"healthzBindAddress": "127.0.0.1",
		"resolvConf":         n.path("etc", "resolv.conf"),
		"clusterDNS":         []any{n.cfg.ClusterDNS.String()},
		"syncFrequency":      "10s",
	}
	var merged map[string]any
	if len(spec.Kubelet.Config) > 0 {
		if err := json.Unmarshal(spec.Kubelet.Config, &merged); err != nil {
			return fmt.Errorf("spec.kubelet.config: %w", err)
		}
	}
	js, err := json.Marshal(mergepatch.Apply(merged, kubelet))
	if err != nil {
		return err
	}
	spec.Kubelet.Config = js
	if n.cfg.NodeIP.IsValid() {
		if spec.Kubelet.ExtraArgs == nil {
			spec.Kubelet.ExtraArgs = map[string]string{}
		}
		spec.Kubelet.ExtraArgs["node-ip"] = n.cfg.NodeIP.String()
	}

	containerd := map[string]any{
		"ttrpc": map[string]any{"address": n.ContainerdSocket() + ".ttrpc"},
		"plugins": map[string]any{
			"io.containerd.internal.v1.opt": map[string]any{"path": "/var/lib/containerd/opt"},
			"io.containerd.grpc.v1.cri": map[string]any{
				"restrict_oom_score_adj":       true,
				"netns_mounts_under_state_dir": true,
				"disable_apparmor":             true,
			},
		},
	}
	user, err := spec.Containerd.ParseConfigTOML()
	if err != nil {
		return fmt.Errorf("spec.containerd.configTOML: %w", err)
	}
	out, err := toml.Marshal(mergepatch.Apply(user, containerd))
	if err != nil {
		return err
	}
	spec.Containerd.ConfigTOML = string(out)
	if spec.Containerd.SandboxImage == "" {
		spec.Containerd.SandboxImage = n.cfg.SandboxImage
	}
	return nil
}

// Defaults are what this node supplies where a NodeConfig is silent: its name and its own CNI bridge.
func (n *Node) Defaults() nodeconfig.Defaults {
	return nodeconfig.Defaults{Hostname: n.cfg.Name, Bridge: n.host.Bridge}
}

// writeConfigs renders the node's files with the agent's renderers (for Start, which runs without the agent).
func (n *Node) writeConfigs() error {
	spec := v1alpha1.NodeConfigSpec{ControlPlane: v1alpha1.ControlPlane{Endpoint: n.cfg.Server}}
	if err := n.Tune(&spec); err != nil {
		return err
	}
	profile, err := distro.Get(Profile)
	if err != nil {
		return err
	}
	nc, err := config.Internal(&v1alpha1.NodeConfig{Spec: spec}, n.Defaults())
	if err != nil {
		return err
	}
	in := render.Input{Config: *nc, Profile: profile, Endpoint: n.cfg.Server, CA: n.cfg.CACert,
		Token: n.cfg.Token, Paths: n.Paths()}
	out, err := render.Node(in)
	if err != nil {
		return err
	}
	cni, err := render.CNI(in, n.cfg.PodCIDR)
	if err != nil {
		return err
	}
	for _, f := range append(out.Files, *cni) {
		if err := atomicfile.Write(f.Path, f.Data, f.Mode); err != nil {
			return err
		}
	}
	return nil
}

// pickPorts chooses the kubelet's port and healthz port.
func (n *Node) pickPorts() error {
	for i := range n.ports {
		p, err := ports.Free()
		if err != nil {
			return err
		}
		n.ports[i] = p
	}
	return nil
}

// writeResolvConf gives pods a resolv.conf of the node's own, so the host's never leaks into tests.
func (n *Node) writeResolvConf() error {
	return atomicfile.Write(n.path("etc", "resolv.conf"), []byte("nameserver "+n.cfg.ClusterDNS.String()+"\n"), 0o644)
}
