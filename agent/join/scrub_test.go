package join

import (
	"strings"
	"testing"
)

func TestScrubTokenKeepsTheRest(t *testing.T) {
	in := `# written by cloud-init
apiVersion: node.berth.dev/v1alpha1
kind: NodeConfig
spec:
  controlPlane:
    endpoint: https://10.0.0.1:6443
    discovery:
      token: abcdef.0123456789abcdef # the bootstrap token
      caCertHashes:
        - sha256:00
  node:
    name: a
`
	out, changed, err := scrubToken([]byte(in))
	if err != nil || !changed {
		t.Fatalf("changed %v, err %v", changed, err)
	}
	s := string(out)
	if strings.Contains(s, "0123456789abcdef") || strings.Contains(s, "token:") {
		t.Errorf("token left:\n%s", s)
	}
	for _, keep := range []string{"# written by cloud-init", "endpoint: https://10.0.0.1:6443", "- sha256:00", "name: a"} {
		if !strings.Contains(s, keep) {
			t.Errorf("lost %q:\n%s", keep, s)
		}
	}
	if _, changed, _ := scrubToken(out); changed {
		t.Error("a second scrub changed the file again")
	}
	if _, changed, err := scrubToken([]byte("apiVersion: x\nspec: {node: {name: b}}\n")); changed || err != nil {
		t.Errorf("a drop-in without a token: changed %v, err %v", changed, err)
	}
}
