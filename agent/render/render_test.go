package render

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
	"k8s.io/client-go/tools/clientcmd"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/systemd"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const testToken = "abcdef.0123456789abcdef"

// fullConfig uses every customisation the API offers, so the goldens show each of them rendered.
const fullConfig = `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://cp.example:6443
    discovery:
      token: abcdef.0123456789abcdef
      caCertHashes: ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
  node:
    name: node-a
    labels: {pool: general, node.kubernetes.io/instance-type: b2s}
    taints: [{key: dedicated, value: gpu, effect: NoSchedule}]
  kubelet:
    config: {maxPods: 60, clusterDNS: ["10.0.0.10"], evictionHard: {memory.available: 200Mi}}
    extraArgs: {v: "2", node-ip: 10.1.0.4}
  containerd:
    sandboxImage: registry.example/pause:3.10
    registryMirrors: {docker.io: ["https://mirror-b.example", "https://mirror-a.example"]}
    configTOML: |
      [debug]
        level = "debug"
  sysctls: {vm.max_map_count: "262144"}
`

func input(t *testing.T, profile string, doc string) Input {
	t.Helper()
	c, err := v1alpha1.Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatal(errs.ToAggregate())
	}
	p, err := distro.Get(profile)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := bootstraptoken.Parse(testToken)
	nc, err := config.Internal(c, nodeconfig.Defaults{Hostname: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	return Input{Config: *nc, Profile: p, Endpoint: c.Spec.ControlPlane.Endpoint,
		CA: []byte("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"), Token: tok, Paths: layout.Default()}
}

// Every file each profile renders, pinned. Run with -update after an intended change and review the diff.
func TestGoldenPerProfile(t *testing.T) {
	for _, name := range distro.Names() {
		t.Run(name, func(t *testing.T) {
			in := input(t, name, fullConfig)
			out, err := Node(in)
			if err != nil {
				t.Fatal(err)
			}
			cni, err := CNI(in, netip.MustParsePrefix("10.244.3.0/24"))
			if err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			for _, f := range append(out.Files, *cni) {
				fmt.Fprintf(&b, "=== %s (mode %04o, restarts %v)\n%s\n", f.Path, f.Mode, f.Units, f.Data)
			}
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("%s renders differently from %s (run with -update if intended):\n%s", name, golden, b.String())
			}
		})
	}
}

func file(t *testing.T, out Output, path string) File {
	t.Helper()
	for _, f := range out.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("no %s rendered", path)
	return File{}
}

// The rendered files are what the real consumers accept: the kubelet config decodes strictly into the v1beta1
// type with the user's fields merged over berth's defaults, the bootstrap kubeconfig loads with clientcmd, the
// containerd config parses as TOML, and the drop-ins use only directives the profile's systemd knows.
func TestRenderedFilesParse(t *testing.T) {
	for _, name := range distro.Names() {
		in := input(t, name, fullConfig)
		out, err := Node(in)
		if err != nil {
			t.Fatal(err)
		}
		p := in.Paths
		var kc kubeletv1beta1.KubeletConfiguration
		if err := yaml.UnmarshalStrict(file(t, out, p.KubeletConfig).Data, &kc); err != nil {
			t.Fatalf("%s: kubelet config: %v", name, err)
		}
		if kc.MaxPods != 60 || len(kc.ClusterDNS) != 1 || kc.ClusterDNS[0] != "10.0.0.10" || kc.EvictionHard["memory.available"] != "200Mi" {
			t.Errorf("%s: user fields not merged: maxPods=%d clusterDNS=%v eviction=%v", name, kc.MaxPods, kc.ClusterDNS, kc.EvictionHard)
		}
		if kc.CgroupDriver != in.Profile.CgroupDriver || kc.Authentication.X509.ClientCAFile != p.CACert || !kc.RotateCertificates {
			t.Errorf("%s: berth defaults lost: %+v", name, kc)
		}
		if got := kc.FailCgroupV1 != nil && !*kc.FailCgroupV1; got != in.Profile.CgroupV1 {
			t.Errorf("%s: failCgroupV1=false is %v, want %v (cgroup v1 target)", name, got, in.Profile.CgroupV1)
		}
		if len(kc.RegisterWithTaints) != 1 || kc.RegisterWithTaints[0].Key != "dedicated" {
			t.Errorf("%s: taints: %v", name, kc.RegisterWithTaints)
		}

		// The containerd config may carry registry credentials (configTOML): only root reads it.
		if cd := file(t, out, p.ContainerdConfig); cd.Mode != 0o600 {
			t.Errorf("%s: containerd config mode %o, want 0600", name, cd.Mode)
		}
		boot := file(t, out, p.BootstrapKubeconfig)
		if boot.Mode != 0o600 {
			t.Errorf("%s: bootstrap kubeconfig mode %o, want 0600", name, boot.Mode)
		}
		kcfg, err := clientcmd.Load(boot.Data)
		if err != nil {
			t.Fatalf("%s: bootstrap kubeconfig: %v", name, err)
		}
		if ai := kcfg.AuthInfos[kcfg.Contexts[kcfg.CurrentContext].AuthInfo]; ai == nil || ai.Token != testToken {
			t.Errorf("%s: bootstrap kubeconfig does not carry the token", name)
		}

		var cd map[string]any
		if err := toml.Unmarshal(file(t, out, p.ContainerdConfig).Data, &cd); err != nil {
			t.Fatalf("%s: containerd config: %v", name, err)
		}
		if cd["version"] != int64(in.Profile.ContainerdConfigVersion) {
			t.Errorf("%s: containerd config version %v, want %d", name, cd["version"], in.Profile.ContainerdConfigVersion)
		}
		if dbg, _ := cd["debug"].(map[string]any); dbg["level"] != "debug" {
			t.Errorf("%s: user TOML not merged: %v", name, cd["debug"])
		}

		for _, d := range []string{p.KubeletDropIn, p.KubeProxyDropIn} {
			if problems := systemd.TooNew(file(t, out, d).Data, in.Profile.Systemd); len(problems) > 0 {
				t.Errorf("%s: %s: %v", name, d, problems)
			}
		}
		hosts := string(file(t, out, "/etc/containerd/certs.d/docker.io/hosts.toml").Data)
		if strings.Index(hosts, "mirror-b") > strings.Index(hosts, "mirror-a") {
			t.Errorf("%s: mirrors reordered:\n%s", name, hosts)
		}
		for _, f := range out.Files {
			if bytes.Contains(f.Data, []byte(testToken)) && f.Path != p.BootstrapKubeconfig {
				t.Errorf("%s: the token is in %s", name, f.Path)
			}
		}
	}
}

// Choosing the cgroupfs driver in the partial kubelet config switches containerd's runc to cgroupfs as well: the
// two must agree or pods fail to start.
func TestCgroupDriverFollowsKubelet(t *testing.T) {
	doc := strings.Replace(fullConfig, "config: {maxPods: 60,", "config: {cgroupDriver: cgroupfs, maxPods: 60,", 1)
	for _, name := range []string{"debian-12", "ubuntu-24.04"} {
		out, err := Node(input(t, name, doc))
		if err != nil {
			t.Fatal(err)
		}
		cd := string(file(t, out, layout.Default().ContainerdConfig).Data)
		if !strings.Contains(cd, "SystemdCgroup = false") {
			t.Errorf("%s: containerd keeps the systemd cgroup driver:\n%s", name, cd)
		}
	}
}

func TestContainerdTOMLErrors(t *testing.T) {
	in := input(t, "debian-12", fullConfig)
	in.Config.Containerd.ConfigTOML = map[string]any{"version": int64(3)} // as parsed from "version = 3"
	if _, err := Node(in); err == nil || !strings.Contains(err.Error(), "spec.containerd.configTOML: version = 3, but this image's containerd reads config version 2") {
		t.Errorf("version mismatch: %v", err)
	}
	// A syntax error is found where the TOML is parsed: validation, and the conversion to the internal config.
	c, err := v1alpha1.Decode([]byte(fullConfig))
	if err != nil {
		t.Fatal(err)
	}
	c.Spec.Containerd.ConfigTOML = "[grpc]\naddress = = 1\n"
	if _, err := config.Internal(c, nodeconfig.Defaults{Hostname: "node-a"}); err == nil || !strings.Contains(err.Error(), "spec.containerd.configTOML: line 2") {
		t.Errorf("syntax error: %v", err)
	}
}

// Once joined (no token), no bootstrap kubeconfig is rendered, so a re-run never writes the token back.
func TestNoTokenNoBootstrapKubeconfig(t *testing.T) {
	in := input(t, "debian-12", fullConfig)
	in.Token = bootstraptoken.Token{}
	out, err := Node(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range out.Files {
		if f.Path == in.Paths.BootstrapKubeconfig {
			t.Error("bootstrap kubeconfig rendered without a token")
		}
	}
}

func TestCNI(t *testing.T) {
	in := input(t, "debian-12", fullConfig)
	if _, err := CNI(in, netip.Prefix{}); err == nil || !strings.Contains(err.Error(), "no podCIDR") {
		t.Errorf("no podCIDR: %v", err)
	}
	f, err := CNI(in, netip.MustParsePrefix("10.244.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []struct {
			Type, Bridge string
			IPAM         struct{ Ranges [][]struct{ Subnet string } }
		}
	}
	if err := json.Unmarshal(f.Data, &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Plugins[0].Type != "bridge" || conf.Plugins[0].Bridge != "cbr0" || conf.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.244.1.0/24" {
		t.Errorf("CNI config: %s", f.Data)
	}
	in.Config.CNI.Mode = nodeconfig.CNINone
	if f, err := CNI(in, netip.MustParsePrefix("10.244.1.0/24")); f != nil || err != nil {
		t.Errorf("mode none rendered %v, %v", f, err)
	}
}
