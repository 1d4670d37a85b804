// Package render turns a validated NodeConfig, the image's distro profile and the join material into the files a
// node runs on: the CA, the bootstrap kubeconfig, the KubeletConfiguration and the kubelet's systemd drop-in,
// containerd's config (in the schema of the installed containerd) and registry hosts, kube-proxy's config and
// drop-in, sysctls, and (once the Node has a podCIDR) the CNI config. Rendering is pure: the same input gives the
// same bytes, so a re-run can tell what changed and restart only what a change affects.
package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path"
	"reflect"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	kubeproxyv1alpha1 "k8s.io/kube-proxy/config/v1alpha1"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/agent/mergepatch"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/layout"
)

// Input is everything rendering depends on.
type Input struct {
	// Config is the node's configuration, defaults applied (its node name, sandbox image, CNI mode and bridge).
	Config  nodeconfig.Config
	Profile distro.Profile
	// Endpoint and CA come from discovery (the CA is the one the pins matched).
	Endpoint string
	CA       []byte
	// Token goes into the bootstrap kubeconfig only; a zero token renders no bootstrap kubeconfig (already joined).
	Token bootstraptoken.Token
	Paths layout.Paths
}

// File is one rendered file.
type File struct {
	Path string
	Mode os.FileMode
	Data []byte
	// Units are restarted when the file changes (none: read on demand, e.g. CNI config, registry hosts).
	Units []string
}

// Output is a node's rendered configuration.
type Output struct {
	Files []File
	// KubeletArgs and KubeProxyArgs are the command lines the drop-ins set (the host tier runs them directly).
	KubeletArgs   []string
	KubeProxyArgs []string
}

// Node renders every file except the CNI config (which needs the Node's podCIDR, see CNI).
func Node(in Input) (Output, error) {
	if in.Config.Node.Name == "" || in.Endpoint == "" || len(in.CA) == 0 {
		return Output{}, fmt.Errorf("render: the node name, Endpoint and CA are required")
	}
	var out Output
	add := func(p string, mode os.FileMode, data []byte, units ...string) {
		out.Files = append(out.Files, File{Path: p, Mode: mode, Data: data, Units: units})
	}
	spec := field.NewPath("spec")

	add(in.Paths.CACert, 0o644, in.CA, layout.KubeletUnit)
	if !in.Token.IsZero() {
		boot, err := bootstrapKubeconfig(in)
		if err != nil {
			return Output{}, err
		}
		add(in.Paths.BootstrapKubeconfig, 0o600, boot)
	}

	kc, err := kubeletConfig(in)
	if err != nil {
		return Output{}, err
	}
	add(in.Paths.KubeletConfig, 0o644, kc.yaml, layout.KubeletUnit)
	out.KubeletArgs = kubeletArgs(in)
	add(in.Paths.KubeletDropIn, 0o644, dropIn("kubelet", "KUBELET_ARGS", out.KubeletArgs), layout.KubeletUnit)

	cd, err := containerdConfig(in, kc.cfg.CgroupDriver == "systemd", spec.Child("containerd", "configTOML"))
	if err != nil {
		return Output{}, err
	}
	// 0600: configTOML may carry registry credentials (auth sections), and only containerd (root) reads it.
	add(in.Paths.ContainerdConfig, 0o600, cd, layout.ContainerdUnit)
	out.Files = append(out.Files, registryHosts(in)...)

	kp, err := kubeProxyConfig(in)
	if err != nil {
		return Output{}, err
	}
	add(in.Paths.KubeProxyConfig, 0o644, kp, layout.KubeProxyUnit)
	out.KubeProxyArgs = []string{"--config=" + in.Paths.KubeProxyConfig}
	add(in.Paths.KubeProxyDropIn, 0o644, dropIn("kube-proxy", "KUBE_PROXY_ARGS", out.KubeProxyArgs), layout.KubeProxyUnit)

	add(in.Paths.Sysctls, 0o644, sysctls(in.Config.Sysctls))
	for _, f := range out.Files {
		if !path.IsAbs(f.Path) {
			return Output{}, fmt.Errorf("render: path %q is not absolute", f.Path)
		}
	}
	return out, nil
}

func bootstrapKubeconfig(in Input) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = &clientcmdapi.Cluster{Server: in.Endpoint, CertificateAuthority: in.Paths.CACert}
	cfg.AuthInfos["tls-bootstrap-token-user"] = &clientcmdapi.AuthInfo{Token: in.Token.Value()}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "tls-bootstrap-token-user"}
	cfg.CurrentContext = "default"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("render bootstrap kubeconfig: %w", err)
	}
	return data, nil
}

type kubelet struct {
	cfg  kubeletv1beta1.KubeletConfiguration
	yaml []byte
}

// kubeletConfig is berth's defaults with the user's partial KubeletConfiguration merged over them (RFC 7386), then
// decoded strictly into the real type.
func kubeletConfig(in Input) (kubelet, error) {
	f, t := false, true
	def := kubeletv1beta1.KubeletConfiguration{
		Authentication: kubeletv1beta1.KubeletAuthentication{
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: &f},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: &t},
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: in.Paths.CACert},
		},
		Authorization:            kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		CgroupDriver:             in.Profile.CgroupDriver,
		ContainerRuntimeEndpoint: "unix://" + in.Paths.ContainerdSocket,
		RotateCertificates:       true,
		ClusterDomain:            "cluster.local",
		ClusterDNS:               []string{"10.96.0.10"},
		ResolverConfig:           &in.Profile.ResolvConf,
		ReadOnlyPort:             0,
		RegisterWithTaints:       in.Config.Node.Taints,
	}
	if in.Profile.CgroupV1 {
		def.FailCgroupV1 = &f // kubelet ≥1.35 refuses cgroup v1 unless told otherwise
	}
	var merged map[string]any
	js, err := json.Marshal(def)
	if err != nil {
		return kubelet{}, err
	}
	if err := json.Unmarshal(js, &merged); err != nil {
		return kubelet{}, err
	}
	if len(in.Config.Kubelet.Config) > 0 {
		var patch map[string]any
		if err := json.Unmarshal(in.Config.Kubelet.Config, &patch); err != nil {
			return kubelet{}, fmt.Errorf("spec.kubelet.config: %w", err)
		}
		merged = mergepatch.Apply(merged, patch)
	}
	merged["apiVersion"] = "kubelet.config.k8s.io/v1beta1"
	merged["kind"] = "KubeletConfiguration"
	js, err = json.Marshal(merged)
	if err != nil {
		return kubelet{}, err
	}
	var cfg kubeletv1beta1.KubeletConfiguration
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return kubelet{}, fmt.Errorf("spec.kubelet.config: merged over berth's defaults: %w", err)
	}
	out, err := marshalPruned(cfg)
	if err != nil {
		return kubelet{}, err
	}
	return kubelet{cfg: cfg, yaml: out}, nil
}

// marshalPruned writes the KubeletConfiguration without the zero values that the Go type emits although they mean
// "the kubelet's default" (durations of 0s, empty objects, an untouched logging block), so the file shows what
// berth and the user chose. The kubelet defaults exactly these zero values, so the result is the same.
func marshalPruned(cfg kubeletv1beta1.KubeletConfiguration) ([]byte, error) {
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, err
	}
	var zeroLogging map[string]any
	zl, _ := json.Marshal(kubeletv1beta1.KubeletConfiguration{}.Logging)
	_ = json.Unmarshal(zl, &zeroLogging)
	if reflect.DeepEqual(doc["logging"], zeroLogging) {
		delete(doc, "logging")
	}
	prune(doc)
	js, err = json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return yaml.JSONToYAML(js)
}

func prune(m map[string]any) {
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			prune(sub)
			if len(sub) == 0 {
				delete(m, k)
			}
			continue
		}
		if v == "0s" {
			delete(m, k)
		}
	}
}

// kubeletArgs are the kubelet's flags: file locations, identity, labels, then the user's extra flags (sorted).
func kubeletArgs(in Input) []string {
	p := in.Paths
	args := []string{
		"--config=" + p.KubeletConfig,
		"--kubeconfig=" + p.Kubeconfig,
		"--bootstrap-kubeconfig=" + p.BootstrapKubeconfig,
		"--cert-dir=" + p.KubeletCertDir,
		"--hostname-override=" + in.Config.Node.Name,
	}
	if labels := in.Config.Node.Labels; len(labels) > 0 {
		kv := make([]string, 0, len(labels))
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			kv = append(kv, k+"="+labels[k])
		}
		args = append(args, "--node-labels="+strings.Join(kv, ","))
	}
	for _, k := range slices.Sorted(maps.Keys(in.Config.Kubelet.ExtraArgs)) {
		args = append(args, "--"+k+"="+in.Config.Kubelet.ExtraArgs[k])
	}
	return args
}

// dropIn sets the unit's argument variable. Only Environment= in [Service]: understood by systemd 229. The
// arguments were validated to hold no whitespace, quotes or backslashes; '%' is a unit specifier and is doubled.
func dropIn(unit, variable string, args []string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by berth-agent from the NodeConfig; changes here are overwritten. Put local flags for\n")
	fmt.Fprintf(&b, "# the %s in /etc/default/%s instead.\n[Service]\n", unit, unit)
	fmt.Fprintf(&b, "Environment=\"%s=%s\"\n", variable, strings.ReplaceAll(strings.Join(args, " "), "%", "%%"))
	return []byte(b.String())
}

// containerdConfig renders the config in the installed containerd's schema and merges the user's TOML over it.
func containerdConfig(in Input, systemdCgroup bool, userPath *field.Path) ([]byte, error) {
	sandbox := in.Config.Containerd.SandboxImage
	runc := map[string]any{
		"runtime_type": "io.containerd.runc.v2",
		"options":      map[string]any{"SystemdCgroup": systemdCgroup},
	}
	version := in.Profile.ContainerdConfigVersion
	cfg := map[string]any{"version": int64(version), "grpc": map[string]any{"address": in.Paths.ContainerdSocket}}
	switch version {
	case 2: // containerd 1.6/1.7
		cfg["plugins"] = map[string]any{"io.containerd.grpc.v1.cri": map[string]any{
			"sandbox_image": sandbox,
			"containerd": map[string]any{
				"snapshotter":          "overlayfs",
				"default_runtime_name": "runc",
				"runtimes":             map[string]any{"runc": runc},
			},
			"cni":      map[string]any{"bin_dir": in.Profile.CNIBinDir, "conf_dir": in.Paths.CNIConfDir},
			"registry": map[string]any{"config_path": in.Paths.RegistryHostsDir},
		}}
	case 3: // containerd 2.x
		cfg["plugins"] = map[string]any{
			"io.containerd.cri.v1.images": map[string]any{
				"snapshotter":   "overlayfs",
				"pinned_images": map[string]any{"sandbox": sandbox},
				"registry":      map[string]any{"config_path": in.Paths.RegistryHostsDir},
			},
			"io.containerd.cri.v1.runtime": map[string]any{
				"containerd": map[string]any{"default_runtime_name": "runc", "runtimes": map[string]any{"runc": runc}},
				"cni":        map[string]any{"bin_dirs": []any{in.Profile.CNIBinDir}, "conf_dir": in.Paths.CNIConfDir},
			},
		}
	default:
		return nil, fmt.Errorf("render: profile %s: containerd config version %d is not supported", in.Profile.Name, version)
	}
	if patch := in.Config.Containerd.ConfigTOML; patch != nil {
		if v, ok := patch["version"]; ok && v != int64(version) {
			return nil, fmt.Errorf("%s: version = %v, but this image's containerd reads config version %d", userPath, v, version)
		}
		cfg = mergepatch.Apply(cfg, patch)
	}
	var b bytes.Buffer
	b.WriteString("# Written by berth-agent from the NodeConfig (spec.containerd); changes here are overwritten.\n")
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("render containerd config: %w", err)
	}
	return b.Bytes(), nil
}

// registryHosts writes one hosts.toml per mirrored registry (containerd reads the directory on every pull).
func registryHosts(in Input) []File {
	var files []File
	for _, host := range slices.Sorted(maps.Keys(in.Config.Containerd.RegistryMirrors)) {
		server := "https://" + host
		if host == "docker.io" {
			server = "https://registry-1.docker.io"
		}
		files = append(files, File{Path: path.Join(in.Paths.RegistryHostsDir, host, "hosts.toml"), Mode: 0o644,
			Data: orderedHosts(server, in.Config.Containerd.RegistryMirrors[host])})
	}
	return files
}

// orderedHosts writes hosts.toml by hand because containerd tries [host] tables in file order, which a map
// encoder would sort.
func orderedHosts(server string, mirrors []string) []byte {
	var b strings.Builder
	b.WriteString("# Written by berth-agent from spec.containerd.registryMirrors; mirrors are tried in this order.\n")
	fmt.Fprintf(&b, "server = %q\n", server)
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	return []byte(b.String())
}

// kubeProxyConfig runs kube-proxy with the node's own credentials (managed services do the same). The document is
// strictly decoded into the real type before it is written.
func kubeProxyConfig(in Input) ([]byte, error) {
	doc := map[string]any{
		"apiVersion":       "kubeproxy.config.k8s.io/v1alpha1",
		"kind":             "KubeProxyConfiguration",
		"clientConnection": map[string]any{"kubeconfig": in.Paths.Kubeconfig},
		"hostnameOverride": in.Config.Node.Name,
		"mode":             "iptables",
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	var check kubeproxyv1alpha1.KubeProxyConfiguration
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&check); err != nil {
		return nil, fmt.Errorf("render kube-proxy config: %w", err)
	}
	return yaml.JSONToYAML(js)
}

func sysctls(s map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# Written by berth-agent from spec.sysctls; changes here are overwritten.\n")
	for _, k := range slices.Sorted(maps.Keys(s)) {
		fmt.Fprintf(&b, "%s = %s\n", k, s[k])
	}
	return []byte(b.String())
}

// CNI renders the kubenet-style bridge + host-local config for the Node's podCIDR. Mode "none" renders nothing.
func CNI(in Input, podCIDR netip.Prefix) (*File, error) {
	if in.Config.CNI.Mode == nodeconfig.CNINone {
		return nil, nil
	}
	if !podCIDR.IsValid() {
		return nil, fmt.Errorf("render CNI config: the Node has no podCIDR (is the controller manager allocating node CIDRs?)")
	}
	bridge := in.Config.CNI.Bridge
	dst := "0.0.0.0/0"
	if podCIDR.Addr().Is6() {
		dst = "::/0"
	}
	data, err := json.MarshalIndent(map[string]any{
		"cniVersion": "0.4.0",
		"name":       "berth",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": podCIDR.Masked().String()}}},
					"routes": []map[string]string{{"dst": dst}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	return &File{Path: path.Join(in.Paths.CNIConfDir, "10-berth.conflist"), Mode: 0o644, Data: append(data, '\n')}, nil
}
