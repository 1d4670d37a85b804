package install

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
)

// recorder is a Target that records what the sequence asks of it (logic only: the bake test and the real
// `packer build` with the provisioner run the sequence against a tree and a machine).
type recorder struct {
	calls  []string
	images []string
	fail   string // a call prefix that fails
}

func (r *recorder) do(call string) error {
	r.calls = append(r.calls, call)
	if r.fail != "" && strings.HasPrefix(call, r.fail) {
		return errors.New("failed")
	}
	return nil
}
func (r *recorder) Put(_ context.Context, f payload.File) error { return r.do("put " + f.Path) }
func (r *recorder) Shell(_ context.Context, s string) error {
	first, _, _ := strings.Cut(s, "\n")
	return r.do("shell " + first)
}
func (r *recorder) Activate(context.Context, payload.Payload, distro.Profile) error {
	return r.do("activate")
}
func (r *recorder) ImportImages(_ context.Context, t []string) ([]string, error) {
	return r.images, r.do("images " + strings.Join(t, " "))
}

func testPayload(t *testing.T) payload.Payload {
	t.Helper()
	agent := filepath.Join(t.TempDir(), "berth-agent")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pkg, err := payload.AgentPackage(agent, "0.1.0~dev")
	if err != nil {
		t.Fatal(err)
	}
	return payload.Payload{Files: []payload.File{{Path: "/etc/a", Mode: 0o644, Data: []byte("a")}, {Path: "/opt/cni/bin", Link: "/usr/lib/cni"}},
		Packages: []payload.Package{pkg}, Images: []string{"/var/lib/berth/images/pause.oci.tar"}}
}

// The steps run in one order for every target; the package goes through dpkg with starts denied; the sandbox
// image must be among the imported ones; sealing comes last.
func TestSequence(t *testing.T) {
	p, err := distro.Get("debian-12")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{images: []string{"berth.dev/pause:3.10"}}
	res, err := Run(context.Background(), r, testPayload(t), p, Options{InstallPackages: true, SandboxImage: "berth.dev/pause:3.10", Seal: true})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"shell missing=\"\"; for pkg in " + strings.Join(p.AllPackages(), " ") + "; do dpkg-query -W -f='${Status}' \"$pkg\" 2>/dev/null | grep -q 'ok installed' || missing=\"$missing $pkg\"; done",
		"put /etc/a", "put /opt/cni/bin",
		"put /var/tmp/berth-agent_0.1.0~dev_amd64.deb",
		"shell created=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\\nexit 101\\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && created=1; fi",
		"activate", "images /var/lib/berth/images/pause.oci.tar", "shell set -e",
	}
	if strings.Join(r.calls, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n  %s\nwant:\n  %s", strings.Join(r.calls, "\n  "), strings.Join(want, "\n  "))
	}
	if len(res.Images) != 1 {
		t.Errorf("images %v", res.Images)
	}

	// Without the sandbox image the run fails, naming it; a failed step stops the sequence, naming the step.
	r = &recorder{images: []string{"berth.dev/busybox:1.35"}}
	if _, err := Run(context.Background(), r, testPayload(t), p, Options{SandboxImage: "berth.dev/pause:3.10"}); err == nil || !strings.Contains(err.Error(), "sandbox_image: berth.dev/pause:3.10 is not among") {
		t.Errorf("missing sandbox image: %v", err)
	}
	r = &recorder{fail: "put /opt/cni/bin"}
	if _, err := Run(context.Background(), r, testPayload(t), p, Options{}); err == nil || !strings.Contains(err.Error(), "install /opt/cni/bin") || strings.Contains(strings.Join(r.calls, " "), "activate") {
		t.Errorf("failed put: %v after %v", err, r.calls)
	}
}

// DenyStarts, run by a real sh against a scratch policy path, creates the policy, keeps the command's exit code and
// removes only a policy it created.
func TestDenyStartsKeepsExitCodeAndCleansUp(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy-rc.d")
	script := func(cmd string) string {
		return strings.ReplaceAll(DenyStarts(cmd), "/usr/sbin/policy-rc.d", policy)
	}
	out, err := exec.Command("sh", "-c", script(`test -x `+Quote(policy)+` && "`+policy+`" start; echo "policy says $?"; exit 3`)).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(string(out), "policy says 101") {
		t.Errorf("exit %v, output %q: want 3 and the policy denying with 101", err, out)
	}
	if _, err := os.Stat(policy); !os.IsNotExist(err) {
		t.Errorf("the policy it created is left: %v", err)
	}
	if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-c", script("true")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if data, _ := os.ReadFile(policy); string(data) != "#!/bin/sh\nexit 0\n" {
		t.Errorf("the machine's own policy was touched: %q", data)
	}
}

// The tree target writes files atomically with their modes and makes links, replacing a directory in a link's place.
func TestTreePut(t *testing.T) {
	root := t.TempDir()
	tr := Tree{Root: root}
	if err := os.MkdirAll(filepath.Join(root, "opt/cni/bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []payload.File{{Path: "/etc/x/y.conf", Mode: 0o600, Data: []byte("y")}, {Path: "/opt/cni/bin", Link: "/usr/lib/cni"}} {
		if err := tr.Put(context.Background(), f); err != nil {
			t.Fatal(err)
		}
	}
	if fi, err := os.Stat(filepath.Join(root, "etc/x/y.conf")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("file: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(root, "opt/cni/bin")); err != nil || l != "/usr/lib/cni" {
		t.Errorf("link: %q %v", l, err)
	}
}
