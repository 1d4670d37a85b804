package deb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/toolbin"
)

func fakeAgent(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "berth-agent")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho agent\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	tier.Present(t, tier.Dpkg)
	out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// The agent's package as dpkg's own tools read it: its control fields, every file with owner and mode, and
// executable maintainer scripts that dpkg will run.
func TestAgentPackageReadByDpkgDeb(t *testing.T) {
	pkg, err := payload.AgentPackage(fakeAgent(t), "0.1.0~dev")
	if err != nil {
		t.Fatal(err)
	}
	path, err := WriteFile(t.TempDir(), pkg)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "berth-agent_0.1.0~dev_amd64.deb" {
		t.Errorf("file name %s", filepath.Base(path))
	}
	fields := dpkgDeb(t, "--field", path, "Package", "Version", "Architecture", "Depends", "Section")
	for _, want := range []string{"Package: berth-agent", "Version: 0.1.0~dev", "Architecture: amd64", "Depends: systemd, init-system-helpers", "Section: admin"} {
		if !strings.Contains(fields, want+"\n") {
			t.Errorf("control lacks %q:\n%s", want, fields)
		}
	}
	contents := dpkgDeb(t, "--contents", path)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/berth-agent",
		"-rw-r--r-- root/root .* ./lib/systemd/system/berth-agent.service",
		"-rw-r--r-- root/root .* ./lib/systemd/system/kubelet.service",
		"-rw-r--r-- root/root .* ./lib/systemd/system/kube-proxy.service",
	} {
		if !matchLine(contents, want) {
			t.Errorf("contents lack %q:\n%s", want, contents)
		}
	}
	ctrl := t.TempDir()
	dpkgDeb(t, "--control", path, ctrl)
	for name, body := range map[string]string{"postinst": pkg.PostInst, "prerm": pkg.PreRm, "postrm": pkg.PostRm} {
		st, err := os.Stat(filepath.Join(ctrl, name))
		if err != nil {
			t.Errorf("control member %s: %v", name, err)
			continue
		}
		if st.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is %v, not executable", name, st.Mode())
		}
		if got, _ := os.ReadFile(filepath.Join(ctrl, name)); string(got) != body {
			t.Errorf("%s differs from the package's script:\n%s", name, got)
		}
		if out, err := exec.Command("sh", "-n", filepath.Join(ctrl, name)).CombinedOutput(); err != nil {
			t.Errorf("%s: sh -n: %v %s", name, err, out)
		}
	}
	// The unit the package installs runs the binary the package installs.
	unit := dpkgDeb(t, "--fsys-tarfile", path)
	if !strings.Contains(unit, "ExecStart="+layout.AgentBinary+" run") {
		t.Errorf("berth-agent.service does not run %s", layout.AgentBinary)
	}
}

func matchLine(text, pattern string) bool {
	parts := strings.Split(pattern, " .* ")
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, parts[0]) && strings.HasSuffix(line, parts[1]) {
			return true
		}
	}
	return false
}

// Same inputs, same bytes: image manifests and caches can key on the package's digest.
func TestWriteIsReproducible(t *testing.T) {
	pkg, err := payload.AgentPackage(fakeAgent(t), "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	if err := Write(&a, pkg); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, pkg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || a.Len() == 0 {
		t.Errorf("two writes differ (%d and %d bytes)", a.Len(), b.Len())
	}
}

// Bad input is refused before anything is written, naming the fields; a missing agent binary names its path.
func TestBadPackageNamesTheField(t *testing.T) {
	pkg, err := payload.AgentPackage(fakeAgent(t), "v1.0")
	if err == nil || !strings.Contains(err.Error(), `version: "v1.0" is not a Debian version`) {
		t.Errorf("version v1.0: err = %v", err)
	}
	pkg.Version, pkg.Name = "1.0", "Berth_Agent"
	dir := t.TempDir()
	if _, err := WriteFile(dir, pkg); err == nil || !strings.Contains(err.Error(), `name: "Berth_Agent"`) {
		t.Errorf("name Berth_Agent: err = %v", err)
	}
	pkg.Name = "berth-agent"
	pkg.Files[0].Source = filepath.Join(dir, "missing")
	if _, err := WriteFile(dir, pkg); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing binary: err = %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed writes left %d files in %s", len(entries), dir)
	}
}

// The agent's package as the bake writes it, from the real agent binary (about 95 MB): gzip dominates.
// Run: go test ./imagebuilder/deb -run '^$' -bench WriteAgentDeb -benchtime 3x
func BenchmarkWriteAgentDeb(b *testing.B) {
	agent := toolbin.Agent(b)
	pkg, err := payload.AgentPackage(agent, "0.1.0~dev")
	if err != nil {
		b.Fatal(err)
	}
	st, _ := os.Stat(agent)
	b.SetBytes(st.Size())
	for b.Loop() {
		var out countingWriter
		if err := Write(&out, pkg); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(out)/1e6, "deb-MB")
	}
}

type countingWriter int64

func (c *countingWriter) Write(p []byte) (int, error) {
	*c += countingWriter(len(p))
	return len(p), nil
}
