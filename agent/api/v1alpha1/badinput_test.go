package v1alpha1

import (
	"errors"
	"strings"
	"testing"

	"berth.dev/berth/internal/node/bootstraptoken"
)

// problems decodes doc, validates it, and returns every message (decode error or field errors) as one string.
func problems(t *testing.T, doc string) string {
	t.Helper()
	c, err := Decode([]byte(doc))
	if err != nil {
		return err.Error()
	}
	if errs := c.Validate(); len(errs) > 0 {
		return errs.ToAggregate().Error()
	}
	return ""
}

// A token pasted into tokenFile is refused without being echoed; so is user info in the endpoint.
func TestMisplacedSecretsAreNotEchoed(t *testing.T) {
	for name, tc := range map[string]struct{ doc, secret, want string }{
		"token in tokenFile": {
			strings.Replace(valid, "token: abcdef.0123456789abcdef", "tokenFile: abcdef.0123456789abcdef", 1),
			"0123456789abcdef", "spec.controlPlane.discovery.tokenFile"},
		"password in the endpoint": {
			strings.Replace(valid, "https://10.0.0.1:6443", "https://admin:hunter2secret@10.0.0.1:6443", 1),
			"hunter2secret", "spec.controlPlane.endpoint"},
		"token as the endpoint's user": {
			strings.Replace(valid, "https://10.0.0.1:6443", "https://abcdef.0123456789abcdef@10.0.0.1:6443", 1),
			"0123456789abcdef", "spec.controlPlane.endpoint"},
	} {
		got := problems(t, tc.doc)
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q does not name %s", name, got, tc.want)
		}
		if strings.Contains(got, tc.secret) {
			t.Errorf("%s: the message echoes the secret: %s", name, got)
		}
	}
}

func TestEndpointIsJustSchemeHostAndPort(t *testing.T) {
	for _, ep := range []string{"https://10.0.0.1:6443?x=1", "https://10.0.0.1:6443#frag", "https://u@10.0.0.1:6443",
		"https://10.0.0.1:6443/api", "http://10.0.0.1:6443", "https://:6443", "https://10.0.0.1:0", "https://10.0.0.1:99999"} {
		got := problems(t, strings.Replace(valid, "https://10.0.0.1:6443", ep, 1))
		if !strings.Contains(got, "spec.controlPlane.endpoint") {
			t.Errorf("endpoint %q accepted (%s)", ep, got)
		}
	}
	for _, ep := range []string{"https://10.0.0.1:6443", "https://cp.example:443/", "https://[fd00::1]:6443", "https://cp.example"} {
		if got := problems(t, strings.Replace(valid, "https://10.0.0.1:6443", ep, 1)); got != "" {
			t.Errorf("endpoint %q refused: %s", ep, got)
		}
	}
}

// extraArgs keys are flag names: anything else could smuggle a second flag or break the drop-in's line.
func TestExtraArgsKeysAreFlagShaped(t *testing.T) {
	for _, key := range []string{`"v\tx"`, `"v\nExecStart=/bin/sh"`, `"v\"x"`, `"v x"`, `"--v"`, `"v=1"`, `"V"`, `"v'"`, `"v\\x"`, `""`} {
		got := problems(t, strings.Replace(valid, `extraArgs: {v: "2"}`, "extraArgs: {"+key+`: "2"}`, 1))
		if !strings.Contains(got, "spec.kubelet.extraArgs") {
			t.Errorf("extraArgs key %s accepted (%s)", key, got)
		}
	}
	for _, key := range []string{"v", "max-pods", "feature-gates", "vmodule", "node-status-update-frequency"} {
		if got := problems(t, strings.Replace(valid, `extraArgs: {v: "2"}`, "extraArgs: {"+key+`: "2"}`, 1)); got != "" {
			t.Errorf("extraArgs key %s refused: %s", key, got)
		}
	}
}

// The partial KubeletConfiguration gets the kubelet's own value checks before anything is written.
func TestKubeletConfigValuesAreChecked(t *testing.T) {
	for name, tc := range map[string]struct{ config, field string }{
		"podCIDR":           {`{podCIDR: 10.0.0.0/33}`, "spec.kubelet.config.podCIDR"},
		"clusterDNS":        {`{clusterDNS: [10.96.0.10, not-an-ip]}`, "spec.kubelet.config.clusterDNS[1]"},
		"maxPods":           {`{maxPods: -1}`, "spec.kubelet.config.maxPods"},
		"podsPerCore":       {`{podsPerCore: -1}`, "spec.kubelet.config.podsPerCore"},
		"imageGC order":     {`{imageGCHighThresholdPercent: 50, imageGCLowThresholdPercent: 60}`, "spec.kubelet.config.imageGCLowThresholdPercent"},
		"imageGC range":     {`{imageGCHighThresholdPercent: 101}`, "spec.kubelet.config.imageGCHighThresholdPercent"},
		"port":              {`{port: 70000}`, "spec.kubelet.config.port"},
		"healthzPort":       {`{healthzPort: -2}`, "spec.kubelet.config.healthzPort"},
		"address":           {`{address: 300.1.1.1}`, "spec.kubelet.config.address"},
		"kubeAPIQPS":        {`{kubeAPIQPS: -5}`, "spec.kubelet.config.kubeAPIQPS"},
		"eviction resource": {`{evictionHard: {memory.available: lots}}`, "spec.kubelet.config.evictionHard[memory.available]"},
		"cgroupDriver":      {`{cgroupDriver: openrc}`, "spec.kubelet.config.cgroupDriver"},
	} {
		doc := strings.Replace(valid, "config: {maxPods: 60, evictionHard: {memory.available: 200Mi}}", "config: "+tc.config, 1)
		if got := problems(t, doc); !strings.Contains(got, tc.field) {
			t.Errorf("%s: %s not named: %s", name, tc.field, got)
		}
	}
	ok := `{maxPods: 110, podCIDR: 10.244.1.0/24, clusterDNS: [10.96.0.10], imageGCHighThresholdPercent: 85, imageGCLowThresholdPercent: 80, evictionHard: {memory.available: 5%, nodefs.available: 10%}, cgroupDriver: systemd}`
	if got := problems(t, strings.Replace(valid, "config: {maxPods: 60, evictionHard: {memory.available: 200Mi}}", "config: "+ok, 1)); got != "" {
		t.Errorf("a good kubelet config refused: %s", got)
	}
}

// One document per NodeConfig: a second one (which the scrub would miss) is refused, naming it.
func TestMoreThanOneDocumentIsRefused(t *testing.T) {
	for name, doc := range map[string]string{
		"garbage after": valid + "---\nthis: [is not\n",
		"second config": valid + "---\n" + valid,
		"empty second":  valid + "---\n",
	} {
		if _, err := Decode([]byte(doc)); err == nil || !strings.Contains(err.Error(), "document") {
			t.Errorf("%s: %v, want an error about the second document", name, err)
		}
	}
	if _, err := Decode([]byte("---\n" + valid)); err != nil {
		t.Errorf("a leading document marker is fine: %v", err)
	}
}

// Every unknown field and duplicate key of a document is reported in one pass, each with where it is, and the
// document still comes back so that its values can be validated in the same pass.
func TestDecodeReportsEveryStrictProblem(t *testing.T) {
	doc := strings.Replace(valid, "endpoint:", "endpiont:", 1)
	doc = strings.Replace(doc, "cni: {mode: bridge}", "cni: {mode: bridge, plugin: x}", 1)
	doc = strings.Replace(doc, "kind: NodeConfig", "kind: NodeConfig\nkind: NodeConfig", 1)
	c, err := Decode([]byte(doc))
	var se *StrictError
	if !errors.As(err, &se) || c == nil {
		t.Fatalf("Decode = %v, %v; want the document and a StrictError", c, err)
	}
	for _, want := range []string{`unknown field "spec.controlPlane.endpiont"`, `unknown field "spec.cni.plugin"`, `line 3: duplicate field "kind"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %s", err, want)
		}
	}
	if errs := c.Validate(); !strings.Contains(errs.ToAggregate().Error(), "spec.controlPlane.endpoint: Required") {
		t.Errorf("the leniently decoded document does not validate as missing its endpoint: %v", errs)
	}
}

// A token the agent scrubbed from cloud-init's copies after the join: a joined node's config stays valid (the token
// is never used again), a node that has not joined is told the copy was scrubbed, and a token that is merely
// invalid still fails a joined node's other checks as before.
func TestScrubbedTokenIsValidOnlyOnceJoined(t *testing.T) {
	c, err := Decode([]byte(strings.Replace(valid, "abcdef.0123456789abcdef", "abcdef."+bootstraptoken.ScrubbedSecret, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.ValidateJoined(); len(errs) > 0 {
		t.Errorf("joined: %v", errs)
	}
	errs := c.Validate()
	if len(errs) != 1 || errs[0].Field != "spec.controlPlane.discovery.token" || !strings.Contains(errs[0].Error(), "scrubbed") {
		t.Errorf("not joined: %v, want one error on the token saying it was scrubbed", errs)
	}
	c.Spec.Node.Name = "Not_A_Name"
	if errs := c.ValidateJoined(); len(errs) != 1 || errs[0].Field != "spec.node.name" {
		t.Errorf("joined with a bad name: %v, want the name's error only", errs)
	}
}
