package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const pin = "sha256:125afbfada2e3a34d8de20f795abc48a18459212cf7dd07dee460005278b32b9"

const valid = `apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://10.0.0.1:6443
    discovery:
      token: abcdef.0123456789abcdef
      caCertHashes: ["` + pin + `"]
  node:
    name: node-a
    labels: {berth.dev/pool: general}
    taints: [{key: dedicated, value: infra, effect: NoSchedule}]
  kubelet:
    config: {maxPods: 60, evictionHard: {memory.available: 200Mi}}
    extraArgs: {v: "2"}
  containerd:
    sandboxImage: berth.dev/pause:3.10
    registryMirrors: {docker.io: ["https://mirror.example"]}
  cni: {mode: bridge}
  sysctls: {net.core.somaxconn: "4096"}
`

func TestValidConfig(t *testing.T) {
	c, err := Decode([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.Validate(); len(errs) > 0 {
		t.Fatalf("valid config has errors: %v", errs)
	}
	if c.Spec.ControlPlane.Discovery.Token.Reveal() != "abcdef.0123456789abcdef" || c.Spec.Node.Taints[0].Effect != "NoSchedule" {
		t.Errorf("decoded %+v", c.Spec)
	}
}

func TestStrictDecodeNamesTheField(t *testing.T) {
	for name, doc := range map[string]string{
		"misspelled":     strings.Replace(valid, "endpoint:", "endpiont:", 1),
		"unknown nested": strings.Replace(valid, "cni: {mode: bridge}", "cni: {mode: bridge, plugin: x}", 1),
		"duplicate":      strings.Replace(valid, "kind: NodeConfig", "kind: NodeConfig\nkind: NodeConfig", 1),
	} {
		_, err := Decode([]byte(doc))
		if err == nil {
			t.Errorf("%s: decoded without error", name)
			continue
		}
		want := map[string]string{"misspelled": "endpiont", "unknown nested": "plugin", "duplicate": "kind"}[name]
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not name %q", name, err, want)
		}
	}
	if _, err := Decode([]byte("")); err == nil {
		t.Error("empty document decoded")
	}
}

// Every problem at once, each with its path, and never the token.
func TestValidateReportsEveryProblemWithItsPath(t *testing.T) {
	doc := `apiVersion: node.berth.dev/v1beta9
kind: NodeConfig
spec:
  controlPlane:
    endpoint: http://10.0.0.1:6443/api
    discovery:
      token: ABCDEF.notavalidsecret!!
      caCertHashes: ["md5:abc"]
  node:
    name: Node_A
    labels: {"bad key!": x, node-role.kubernetes.io/agent: "", node.kubernetes.io/pool: a, topology.kubernetes.io/zone: z}
    taints: [{key: k, effect: Sometimes}]
  kubelet:
    config: {maxPod: 60, staticPodPath: /etc/kubernetes/manifests}
    extraArgs: {kubeconfig: /x, feature-gates: "A=true B=false"}
  containerd:
    sandboxImage: pause
    registryMirrors: {docker.io: ["ftp://m"]}
    configTOML: |
      version = 3
      [plugins

  cni: {mode: calico}
  sysctls: {"not a sysctl": "1"}
`
	c, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	errs := c.Validate()
	got := errs.ToAggregate().Error()
	for _, path := range []string{
		"apiVersion", "spec.controlPlane.endpoint", "spec.controlPlane.discovery.token",
		"spec.controlPlane.discovery.caCertHashes[0]", "spec.node.name", "spec.node.labels[bad key!]",
		"spec.node.taints[0].effect", "spec.kubelet.config.staticPodPath", "spec.kubelet.config",
		"spec.kubelet.extraArgs[kubeconfig]", "spec.containerd.sandboxImage", "spec.containerd.registryMirrors[docker.io][0]",
		"spec.cni.mode", "spec.sysctls[not a sysctl]", "spec.node.labels[node-role.kubernetes.io/agent]",
		"spec.kubelet.extraArgs[feature-gates]", "spec.containerd.configTOML",
	} {
		if !strings.Contains(got, path+":") {
			t.Errorf("no error for %s in:\n%s", path, strings.ReplaceAll(got, ", ", "\n"))
		}
	}
	if strings.Contains(got, "notavalidsecret") {
		t.Errorf("the token leaked into the errors: %s", got)
	}
	for _, allowed := range []string{"node.kubernetes.io/pool", "topology.kubernetes.io/zone"} {
		if strings.Contains(got, "spec.node.labels["+allowed+"]") {
			t.Errorf("label %s is one the kubelet may set, but was refused", allowed)
		}
	}
	if !strings.Contains(got, "line 2, column") {
		t.Errorf("containerd TOML error has no line: %s", got)
	}
	if !strings.Contains(got, `unknown field "maxPod"`) {
		t.Errorf("kubelet config typo not named: %s", got)
	}
}

func TestDiscoveryNeedsExactlyOneOfEach(t *testing.T) {
	base := func() *NodeConfig {
		c, _ := Decode([]byte(valid))
		return c
	}
	c := base()
	c.Spec.ControlPlane.Discovery.CACertHashes = nil
	if got := c.Validate().ToAggregate(); got == nil || !strings.Contains(got.Error(), "caCertHashes: Required") {
		t.Errorf("no trust anchor: %v", got)
	}
	c = base()
	c.Spec.ControlPlane.Discovery.TokenFile = "/etc/berth/token"
	if got := c.Validate().ToAggregate(); got == nil || !strings.Contains(got.Error(), "tokenFile: Forbidden") {
		t.Errorf("token and tokenFile: %v", got)
	}
	c = base()
	c.Spec.ControlPlane.Discovery.CABundle = "not pem"
	if got := c.Validate().ToAggregate(); got == nil || !strings.Contains(got.Error(), "caBundle: Forbidden") {
		t.Errorf("pins and bundle: %v", got)
	}
	c.Spec.ControlPlane.Discovery.CACertHashes = nil
	if got := c.Validate().ToAggregate(); got == nil || !strings.Contains(got.Error(), "caBundle: Invalid value") {
		t.Errorf("a bundle that is not PEM: %v", got)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	c, _ := Decode([]byte(valid))
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "discovery", c.Spec.ControlPlane.Discovery)
	js, _ := json.Marshal(c)
	// fmt prints an unexported field without calling its methods: the holder must not show the token either.
	type holder struct{ d Discovery }
	h := holder{c.Spec.ControlPlane.Discovery}
	out := map[string]string{"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c), "slog": logs.String(), "json": string(js)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		out["unexported field "+verb] = fmt.Sprintf(verb, h)
	}
	for name, out := range out {
		if strings.Contains(out, "0123456789abcdef") || strings.Contains(out, fmt.Sprintf("%x", "0123456789abcdef")) {
			t.Errorf("%s leaks the token: %s", name, out)
		}
	}
	if c.Spec.ControlPlane.Discovery.Token.Reveal() != "abcdef.0123456789abcdef" {
		t.Error("Reveal lost the token")
	}
}

// go test -fuzz FuzzDecode ./agent/api/v1alpha1: decoding and validating arbitrary input never panics; a document
// that decodes cleanly encodes to JSON that decodes cleanly to the same document (round trip), and a document with
// strict problems still comes back for validation. The seeds run as ordinary tests.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\n"))
	f.Add([]byte(`{"spec":{"kubelet":{"config":[1,2]}}}`))
	f.Add([]byte("spec:\n  sysctls: {a: b}\n  node: {taints: [{}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		var strict *StrictError
		if errors.As(err, &strict) {
			if c == nil || len(strict.Problems) == 0 {
				t.Fatalf("a StrictError without the document or a problem: %v", err)
			}
			_ = c.Validate()
			return
		}
		if err != nil {
			return
		}
		_ = c.Validate()
		first, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(first)
		if err != nil {
			t.Fatalf("the JSON encoding of a decoded document does not decode: %v\n%s", err, first)
		}
		if second, _ := json.Marshal(again); !bytes.Equal(first, second) {
			t.Fatalf("round trip changed the document:\n%s\n%s", first, second)
		}
	})
}
