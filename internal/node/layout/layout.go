// Package layout is where things live on a berth node: the paths the image builder installs to and the agent
// reads and writes, the names of the units both halves handle, and the pause image the image ships and the
// kubelet's containerd uses. The units in systemd/ name the same paths (a test checks them against this package).
package layout

// Units the agent starts and restarts; the image builder installs them.
const (
	AgentUnit      = "berth-agent.service"
	ContainerdUnit = "containerd.service"
	KubeletUnit    = "kubelet.service"
	KubeProxyUnit  = "kube-proxy.service"
	SharesUnit     = "berth-csi.service"
)

// PauseImage is the sandbox (pause) image the image builder pre-caches and the node's containerd uses unless the
// NodeConfig names another.
const PauseImage = "berth.dev/pause:3.10"

// LogsImage is the log shipper's container image (berth-logs, agent/componentimage), which the berth-logs DaemonSet
// (deploy/logs.yaml) runs and node images pre-cache. Its tag is the agent's version.
const LogsImage = "berth.dev/berth-logs:0.1.0"

// AgentImage is the agent's own container image (agent/componentimage), which the share drivers' provisioner
// Deployment (deploy/shares.yaml) runs and node images pre-cache. Its tag is the agent's version.
const AgentImage = "berth.dev/berth-agent:0.1.0"

// The agent's own files.
const (
	// AgentBinary is the agent, installed by its package.
	AgentBinary = "/usr/bin/berth-agent"
	// DropInDir holds NodeConfig drop-ins (cloud-init writes them; the agent merges them in lexical order).
	DropInDir = "/etc/berth/config.d"
	// StateDir holds the agent's status file, joined marker and pending restarts.
	StateDir = "/var/lib/berth"
	// ImageDir holds the OCI image tarballs the image ships; the agent imports them again if containerd lacks them.
	ImageDir = "/var/lib/berth/images"
	// ProfileFile records, inside a baked image, which distro profile it was baked from.
	ProfileFile = "/usr/lib/berth/profile"
	// ImageManifest lists what a baked image holds (packages, binaries' digests, images).
	ImageManifest = "/etc/berth/image-manifest.json"
	// UnitDir is where the agent's package installs its units; /etc/systemd/system stays the administrator's.
	UnitDir = "/lib/systemd/system"
	// LBHostStatus is the LB host role's status file (`berth-agent lb host` writes it, `berth-agent status` shows
	// it); it is run-time state, gone at reboot.
	LBHostStatus = "/run/berth/lb-host.json"
)

// Paths are where a node's Kubernetes files live. Default is a real node; the host test tier moves them into a
// directory per node.
type Paths struct {
	CACert              string
	BootstrapKubeconfig string
	Kubeconfig          string // written by the kubelet after its TLS bootstrap
	KubeletConfig       string
	KubeletCertDir      string
	KubeletDropIn       string
	KubeProxyConfig     string
	KubeProxyDropIn     string
	ContainerdConfig    string
	ContainerdSocket    string
	RegistryHostsDir    string
	CNIConfDir          string
	Sysctls             string
	// ShippedImages holds the image tarballs the image builder shipped (imported again if containerd lacks them).
	ShippedImages string
	// UserDataCopies are where provisioning agents keep copies of the instance's user data (cloud-init's instance
	// directories, seed and run-time data; the Azure Linux agent's custom data), which the agent scrubs of the
	// bootstrap token after the join.
	UserDataCopies []string
}

// Default are the paths on a node.
func Default() Paths {
	return Paths{
		CACert:              "/etc/kubernetes/pki/ca.crt",
		BootstrapKubeconfig: "/var/lib/kubelet/bootstrap-kubeconfig",
		Kubeconfig:          "/var/lib/kubelet/kubeconfig",
		KubeletConfig:       "/var/lib/kubelet/config.yaml",
		KubeletCertDir:      "/var/lib/kubelet/pki",
		KubeletDropIn:       "/etc/systemd/system/" + KubeletUnit + ".d/10-berth.conf",
		KubeProxyConfig:     "/var/lib/kube-proxy/config.yaml",
		KubeProxyDropIn:     "/etc/systemd/system/" + KubeProxyUnit + ".d/10-berth.conf",
		ContainerdConfig:    "/etc/containerd/config.toml",
		ContainerdSocket:    "/run/containerd/containerd.sock",
		RegistryHostsDir:    "/etc/containerd/certs.d",
		CNIConfDir:          "/etc/cni/net.d",
		Sysctls:             "/etc/sysctl.d/90-berth.conf",
		ShippedImages:       ImageDir,
		UserDataCopies:      []string{"/var/lib/cloud", "/run/cloud-init", "/var/lib/waagent"},
	}
}
