package packer

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/test/toolbin"
)

// packer-sdc plugin-check: the binary is named packer-plugin-<name>, describes itself with a version, the SDK and
// API versions, and at least one component.
func TestPluginCheck(t *testing.T) {
	sdc := filepath.Join(toolbin.PackerSDC.ForTest(t), "packer-sdc")
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "packer-plugin-berth"), "berth.dev/berth/imagebuilder").CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	cmd := exec.Command(sdc, "plugin-check", "packer-plugin-berth")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("plugin-check: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(dir, "packer-plugin-berth"), "describe").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":"0.1.0-dev","sdk_version":"0.6.10","api_version":"x5.0","builders":["disk"],"post_processors":[],"provisioners":["node"],"datasources":[],"protocol_version":"v2"}`
	if strings.TrimSpace(string(out)) != want {
		t.Errorf("describe = %s\nwant       %s", out, want)
	}
}
