package join

import (
	"fmt"
	"reflect"

	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	yamlv3 "go.yaml.in/yaml/v3"

	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/layout"
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

// cleanup is best effort on a node that has joined: a token file that cannot be removed and a drop-in that cannot
// be parsed are warnings, named in the phase's detail, and the rest is still removed; hidden files (an editor's
// backup) are skipped, as the config loader skips them.
func TestCleanupIsBestEffort(t *testing.T) {
	dir := t.TempDir()
	dropIns := filepath.Join(dir, "config.d")
	os.MkdirAll(dropIns, 0o700)
	inline := "apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  controlPlane:\n    discovery:\n      token: abcdef.0123456789abcdef\n"
	os.WriteFile(filepath.Join(dropIns, "10-user-data.yaml"), []byte(inline), 0o600)
	os.WriteFile(filepath.Join(dropIns, "20-broken.yaml"), []byte("spec: [unclosed\n"), 0o600)
	os.WriteFile(filepath.Join(dropIns, ".10-user-data.yaml.swp"), []byte("\x00binary: [garbage\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "not-a-dir"), nil, 0o600)
	boot := filepath.Join(dir, "bootstrap-kubelet.conf")
	os.WriteFile(boot, []byte("x"), 0o600)

	var logs strings.Builder
	s := &state{log: slog.New(slog.NewTextHandler(&logs, nil)), cfg: Config{DropInDir: dropIns,
		Paths:      layout.Paths{BootstrapKubeconfig: boot},
		NodeConfig: &nodeconfig.Config{ControlPlane: nodeconfig.ControlPlane{Discovery: nodeconfig.Discovery{TokenFile: filepath.Join(dir, "not-a-dir", "token")}}}}}
	detail, err := cleanup(context.Background(), s)
	if err != nil {
		t.Fatalf("cleanup failed the phase: %v", err)
	}
	if _, err := os.Stat(boot); !os.IsNotExist(err) {
		t.Error("the bootstrap kubeconfig is still there")
	}
	if data, _ := os.ReadFile(filepath.Join(dropIns, "10-user-data.yaml")); strings.Contains(string(data), "0123456789abcdef") {
		t.Error("the inline token was not scrubbed")
	}
	for _, want := range []string{"not-a-dir/token", "20-broken.yaml"} {
		if !strings.Contains(detail, want) || !strings.Contains(logs.String(), want) {
			t.Errorf("%s not named as a warning: detail %q\nlog: %s", want, detail, logs.String())
		}
	}
	if strings.Contains(detail+logs.String(), ".swp") {
		t.Errorf("the hidden backup was read: %s %s", detail, logs.String())
	}
}

// The scrub's properties on any drop-in: when it changes one, the result parses, holds no
// spec.controlPlane.discovery.token (a second scrub changes nothing), and keeps every other value of the document
// (compared where the document decodes as a map: one with a duplicate key loses its token but has no map).
func FuzzScrubToken(f *testing.F) {
	f.Add([]byte("apiVersion: node.berth.dev/v1alpha1\nkind: NodeConfig\nspec:\n  controlPlane:\n    discovery:\n      token: abcdef.0123456789abcdef # c\n      caCertHashes: [x]\n"))
	f.Add([]byte(`{"spec":{"controlPlane":{"discovery":{"token":"abcdef.0123456789abcdef","tokenFile":""}}}}`))
	f.Add([]byte("spec:\n  controlPlane: {discovery: {token: a}}\n  node: {name: n}\n"))
	f.Add([]byte("spec: [1, 2]\n"))
	f.Add([]byte("# only a comment\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, changed, err := scrubToken(data)
		if err != nil || !changed {
			return
		}
		if _, again, err := scrubToken(out); again || err != nil {
			t.Fatalf("a second scrub: changed %v, err %v", again, err)
		}
		var before, after map[string]any
		if err := yamlv3.Unmarshal(data, &before); err != nil {
			// A drop-in the config loader refuses (a duplicate key): its token goes all the same, and the
			// second scrub found none left; there is no map to compare.
			return
		}
		if err := yamlv3.Unmarshal(out, &after); err != nil {
			t.Fatalf("the scrubbed document does not parse: %v\n%s", err, out)
		}
		// Keys that are not all strings decode as map[any]any: compare with every key as its string.
		before, after = normalize(before).(map[string]any), normalize(after).(map[string]any)
		disc := func(m map[string]any) map[string]any {
			spec, _ := m["spec"].(map[string]any)
			cp, _ := spec["controlPlane"].(map[string]any)
			d, _ := cp["discovery"].(map[string]any)
			return d
		}
		if d := disc(after); d != nil {
			if _, ok := d["token"]; ok {
				t.Fatalf("token left:\n%s", out)
			}
		}
		if d := disc(before); d != nil {
			delete(d, "token")
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("the scrub changed more than the token:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// normalize is v with every map a map[string]any, its keys as fmt.Sprint spells them.
func normalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = normalize(e)
		}
		return out
	case map[any]any:
		out := map[string]any{}
		for k, e := range v {
			out[fmt.Sprint(k)] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalize(e)
		}
		return out
	}
	return v
}

// cloud-init's copies of the user data, as a NoCloud guest keeps them: the instance directory (the user data, its
// processed copy, the pickled datasource with a length-prefixed string), the instance link, the seed and the run
// directory. Every copy of the secret goes, lengths and modes stay; links and FIFOs are not followed or opened; a
// file too large to rewrite that holds the secret is reported, and one that does not is left alone quietly.
func TestScrubCopiesOfTheUserData(t *testing.T) {
	const secret = "0123456789abcdef"
	root := t.TempDir()
	lib, run, outside := filepath.Join(root, "var/lib/cloud"), filepath.Join(root, "run/cloud-init"), filepath.Join(root, "elsewhere")
	userData := "#cloud-config\nwrite_files:\n  - path: /etc/berth/config.d/10-user-data.yaml\n    content: |\n      spec: {controlPlane: {discovery: {token: abcdef." + secret + "}}}\n"
	pickle := "\x80\x04\x95\x00\x8c" + string(rune(len(userData))) + userData + "\x94."
	files := map[string]struct {
		data string
		mode os.FileMode
	}{
		"var/lib/cloud/instances/iid-1/user-data.txt":   {userData, 0o600},
		"var/lib/cloud/instances/iid-1/user-data.txt.i": {"Content-Type: multipart/mixed\n\n" + userData, 0o600},
		"var/lib/cloud/instances/iid-1/obj.pkl":         {pickle, 0o400},
		"var/lib/cloud/seed/nocloud/user-data":          {userData, 0o600},
		"var/lib/cloud/instances/iid-1/boot-finished":   {"no secret here", 0o644},
		"run/cloud-init/instance-data-sensitive.json":   {`{"userdata": "` + secret + `"}`, 0o600},
		"elsewhere/not-ours":                            {secret, 0o600},
	}
	for p, f := range files {
		p = filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(filepath.Join(lib, "instances/iid-1"), filepath.Join(lib, "instance"))
	os.Symlink(filepath.Join(outside, "not-ours"), filepath.Join(lib, "link-out"))
	if err := syscall.Mkfifo(filepath.Join(lib, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(lib, "big-with-secret")
	f, _ := os.Create(big)
	f.WriteAt([]byte(secret), maxCopySize-5)
	f.Truncate(maxCopySize + 100)
	f.Close()
	quiet := filepath.Join(lib, "big-without")
	os.WriteFile(quiet, nil, 0o600)
	os.Truncate(quiet, maxCopySize+1)

	scrubbed, problems := scrubCopies([]string{lib, run, filepath.Join(root, "var/lib/waagent")}, secret)
	if len(problems) != 1 || problems[0].path != big || !strings.Contains(problems[0].err.Error(), "holds the token's secret") {
		t.Errorf("problems %v, want only %s reported as too large to rewrite", problems, big)
	}
	if len(scrubbed) != 5 {
		t.Errorf("scrubbed %v, want the 5 copies", scrubbed)
	}
	for p, f := range files {
		data, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(filepath.Join(root, p))
		want := f.data
		if !strings.HasPrefix(p, "elsewhere/") {
			want = strings.ReplaceAll(f.data, secret, bootstraptoken.ScrubbedSecret)
		}
		if string(data) != want || fi.Mode().Perm() != f.mode {
			t.Errorf("%s: %q (%v), want %q (%v)", p, data, fi.Mode().Perm(), want, f.mode)
		}
	}
	if again, problems := scrubCopies([]string{lib, run}, secret); len(again) != 0 || len(problems) != 1 {
		t.Errorf("a second scrub: changed %v, problems %v", again, problems)
	}
}

func TestHoldsFindsTheNeedleAcrossReads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, at := range []int{0, 1<<20 - 3, 1 << 20, 3<<20 + 7} {
		os.WriteFile(p, append(make([]byte, at), "needle-xyz"...), 0o600)
		if found, err := holds(p, []byte("needle-xyz")); !found || err != nil {
			t.Errorf("needle at %d: found %v, err %v", at, found, err)
		}
	}
	os.WriteFile(p, make([]byte, 3<<20), 0o600)
	if found, err := holds(p, []byte("needle-xyz")); found || err != nil {
		t.Errorf("no needle: found %v, err %v", found, err)
	}
}
