// Package v1alpha1 is berth's node configuration API, node.berth.dev/v1alpha1 NodeConfig: what a node needs to
// join a hosted control plane and run. It is delivered by cloud-init user data (a MIME part or write_files) and
// drop-ins in /etc/berth/config.d/, decoded strictly (an unknown or misspelled field is an error) and validated
// with every problem reported at once, each with its field path.
package v1alpha1

import (
	"encoding/json"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
)

const (
	// Group and Version of the API.
	Group   = "node.berth.dev"
	Version = "v1alpha1"
	// APIVersion is Group/Version.
	APIVersion = Group + "/" + Version
	// Kind of the only object.
	Kind = "NodeConfig"
)

// NodeConfig is a node's configuration.
type NodeConfig struct {
	// APIVersion is node.berth.dev/v1alpha1.
	APIVersion string `json:"apiVersion"`
	// Kind is NodeConfig.
	Kind string `json:"kind"`
	// Spec is the configuration. Drop-ins may each hold a part of it; they are merged (RFC 7386) in order.
	Spec NodeConfigSpec `json:"spec"`
}

// NodeConfigSpec is what the operator decides.
type NodeConfigSpec struct {
	// ControlPlane is where the hosted control plane is and how to trust it. Required.
	ControlPlane ControlPlane `json:"controlPlane"`
	// Node is the Node object's name, labels and taints.
	Node Node `json:"node,omitempty"`
	// Kubelet customises the kubelet.
	Kubelet Kubelet `json:"kubelet,omitempty"`
	// Containerd customises containerd.
	Containerd Containerd `json:"containerd,omitempty"`
	// CNI chooses pod networking.
	CNI CNI `json:"cni,omitempty"`
	// Sysctls are kernel settings (name → value, e.g. net.core.somaxconn: "4096"), applied at once and kept in
	// /etc/sysctl.d/90-berth.conf across reboots.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// ControlPlane says where the hosted control plane is and how to trust it.
type ControlPlane struct {
	// Endpoint is the apiserver URL, https://host[:port].
	Endpoint string `json:"endpoint"`
	// Discovery is how the node learns to trust the control plane. Required.
	Discovery Discovery `json:"discovery"`
}

// Discovery is how the node learns to trust the control plane: a bootstrap token (which also authenticates the
// kubelet's TLS bootstrap) plus either CA public-key pins (kubeadm's discovery-token-ca-cert-hash) checked against
// the signed cluster-info, or the full CA bundle.
type Discovery struct {
	// Token is the bootstrap token "<id>.<secret>" (kubeadm's format). Exactly one of token and tokenFile is set.
	// The agent removes it from the drop-ins once the node has joined, and replaces its secret with
	// SCRUBBED-BYBERTH in cloud-init's copies of the user data; a joined node accepts such a token (it never uses
	// one again), a node that has not joined refuses it.
	Token Secret `json:"token,omitzero"`
	// TokenFile names a file holding the bootstrap token; the agent deletes it once the node has joined.
	TokenFile string `json:"tokenFile,omitempty"`
	// CACertHashes are "sha256:<hex>" pins of the CA's public key; any match passes.
	CACertHashes []string `json:"caCertHashes,omitempty"`
	// CABundle is the cluster CA, PEM. Exactly one of CACertHashes and CABundle is set.
	CABundle string `json:"caBundle,omitempty"`
}

// Node is the Node object's identity.
type Node struct {
	// Name is the Node's name. Default: the hostname.
	Name string `json:"name,omitempty"`
	// Labels are set on the Node when it registers (the kubelet's --node-labels; NodeRestriction limits which).
	Labels map[string]string `json:"labels,omitempty"`
	// Taints are set on the Node when it registers (key, value, effect).
	Taints []corev1.Taint `json:"taints,omitempty"`
}

// Kubelet customises the kubelet.
type Kubelet struct {
	// Config is a partial KubeletConfiguration (kubelet.config.k8s.io/v1beta1 fields, without apiVersion/kind),
	// merged over berth's defaults.
	Config json.RawMessage `json:"config,omitempty"`
	// ExtraArgs are extra command-line flags, name → value, without the leading dashes.
	ExtraArgs map[string]string `json:"extraArgs,omitempty"`
}

// Containerd customises containerd.
type Containerd struct {
	// SandboxImage is the pause image; it must be pre-cached in the image (no registry is assumed at boot).
	// Default: berth.dev/pause:3.10, which every berth image ships.
	SandboxImage string `json:"sandboxImage,omitempty"`
	// RegistryMirrors maps a registry host to mirror endpoints (https URLs), tried in order.
	RegistryMirrors map[string][]string `json:"registryMirrors,omitempty"`
	// ConfigTOML is containerd configuration merged over berth's rendered config.
	ConfigTOML string `json:"configTOML,omitempty"`
}

// CNI chooses pod networking.
type CNI struct {
	// Mode is "bridge" (berth writes a bridge + host-local config from the node's podCIDR, kubenet style) or
	// "none" (a CNI DaemonSet brings its own). Default bridge.
	Mode string `json:"mode,omitempty"`
}

// Secret is a string in YAML and JSON that never prints: fmt (any verb, also when the Secret sits in an
// unexported field, which fmt prints without calling methods), slog and JSON show "<redacted>".
type Secret struct {
	// reveal is a closure over the value: fmt prints a func as an address only.
	reveal func() string
}

// NewSecret holds s.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{reveal: func() string { return s }}
}

func (s Secret) String() string               { return s.redacted() }
func (s Secret) GoString() string             { return s.redacted() }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(s.redacted()) }
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.redacted()) }

// UnmarshalJSON reads the secret from a JSON string.
func (s *Secret) UnmarshalJSON(data []byte) error {
	var v string
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("want a string")
	}
	*s = NewSecret(v)
	return nil
}

// IsZero reports whether no secret is held.
func (s Secret) IsZero() bool { return s.reveal == nil }

// Reveal returns the secret, for the one place that needs it.
func (s Secret) Reveal() string {
	if s.reveal == nil {
		return ""
	}
	return s.reveal()
}

func (s Secret) redacted() string {
	if s.IsZero() {
		return ""
	}
	return "<redacted>"
}
