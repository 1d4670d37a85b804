package node

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/agent/atomicfile"
)

// writeConfigs renders containerd's config, the KubeletConfiguration, the CNI conflist, the CA, the pods'
// resolv.conf and the bootstrap kubeconfig (0600: it holds the token).
func (n *Node) writeConfigs() error {
	kubeletPort, err := freePort()
	if err != nil {
		return err
	}
	healthzPort, err := freePort()
	if err != nil {
		return err
	}
	kubelet, err := n.kubeletConfig(kubeletPort, healthzPort)
	if err != nil {
		return fmt.Errorf("render kubelet config: %w", err)
	}
	cni, err := n.cniConfig()
	if err != nil {
		return fmt.Errorf("render CNI config: %w", err)
	}
	boot, err := n.bootstrapKubeconfig()
	if err != nil {
		return fmt.Errorf("render bootstrap kubeconfig: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{n.path("etc", "containerd.toml"), []byte(n.containerdConfig()), 0o644},
		{n.path("etc", "kubelet.yaml"), kubelet, 0o644},
		{n.path("etc", "ca.crt"), n.cfg.CACert, 0o644},
		// Pods resolve through a resolv.conf of the node's own, so the host's never leaks into tests.
		{n.path("etc", "resolv.conf"), []byte("nameserver " + n.cfg.ClusterDNS.String() + "\n"), 0o644},
		{n.path("net.d", "10-berth.conflist"), cni, 0o644},
		{n.path("etc", "bootstrap-kubelet.conf"), boot, 0o600},
	} {
		if err := atomicfile.Write(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// containerdConfig is a version 2 config (containerd 1.6, Debian 12). Paths under /var/lib and /run are the
// node's own, through its mount namespace; the sockets live in the node dir so the host can reach them.
func (n *Node) containerdConfig() string {
	sock := n.ContainerdSocket()
	return fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # This host lacks CAP_SYS_RESOURCE: runc cannot set negative OOM scores.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, sock, sock+".ttrpc", n.cfg.SandboxImage, n.path("net.d"))
}

func (n *Node) kubeletConfig(port, healthzPort int) ([]byte, error) {
	address := "127.0.0.1"
	if n.cfg.NodeIP.IsValid() {
		address = n.cfg.NodeIP.String()
	}
	f := false
	t := true
	hp := int32(healthzPort)
	ro := int32(0)
	cfg := kubeletv1beta1.KubeletConfiguration{
		TypeMeta:           metav1.TypeMeta{APIVersion: "kubelet.config.k8s.io/v1beta1", Kind: "KubeletConfiguration"},
		Address:            address,
		Port:               int32(port),
		ReadOnlyPort:       ro,
		HealthzBindAddress: "127.0.0.1",
		HealthzPort:        &hp,
		Authentication: kubeletv1beta1.KubeletAuthentication{
			Anonymous: kubeletv1beta1.KubeletAnonymousAuthentication{Enabled: &f},
			Webhook:   kubeletv1beta1.KubeletWebhookAuthentication{Enabled: &t},
			X509:      kubeletv1beta1.KubeletX509Authentication{ClientCAFile: n.path("etc", "ca.crt")},
		},
		Authorization:            kubeletv1beta1.KubeletAuthorization{Mode: kubeletv1beta1.KubeletAuthorizationModeWebhook},
		CgroupDriver:             "cgroupfs",
		CgroupRoot:               "/" + n.host.Cgroup + "/pods",
		FailCgroupV1:             &f, // this host runs cgroup v1
		FailSwapOn:               &f,
		ContainerRuntimeEndpoint: "unix://" + n.ContainerdSocket(),
		RotateCertificates:       true,
		ClusterDomain:            "cluster.local",
		ClusterDNS:               []string{n.cfg.ClusterDNS.String()},
		ResolverConfig:           strPtr(n.path("etc", "resolv.conf")),
		PodLogsDir:               "/var/log/pods",
		SyncFrequency:            metav1.Duration{Duration: 10 * time.Second},
	}
	return yaml.Marshal(cfg)
}

func strPtr(s string) *string { return &s }

func (n *Node) cniConfig() ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "0.4.0",
		"name":       "berth",
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      n.host.Bridge,
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":   "host-local",
				"ranges": [][]map[string]string{{{"subnet": n.cfg.PodCIDR.String()}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
			},
		}},
	}, "", "  ")
}

func (n *Node) bootstrapKubeconfig() ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = &clientcmdapi.Cluster{Server: n.cfg.Server, CertificateAuthorityData: n.cfg.CACert}
	cfg.AuthInfos["kubelet-bootstrap"] = &clientcmdapi.AuthInfo{Token: n.cfg.Token.Value()}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "default", AuthInfo: "kubelet-bootstrap"}
	cfg.CurrentContext = "default"
	return clientcmd.Write(*cfg)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return strconv.Atoi(p)
}
