package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/toolbin"
)

// `berth-agent image -o FILE` writes the image of that very binary: named layout.AgentImage (what
// deploy/shares.yaml's provisioner runs), its layer's /berth-agent byte for byte the binary that wrote it; it
// prints the path. Without -o it is a usage error.
func TestImageOfItself(t *testing.T) {
	agent := toolbin.Agent(t)
	out := filepath.Join(t.TempDir(), "agent.oci.tar")
	got, err := exec.Command(agent, "image", "-o", out).Output()
	if err != nil || strings.TrimSpace(string(got)) != out {
		t.Fatalf("image: %v, printed %q", err, got)
	}
	self, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	img := images.Read(t, out)
	if img.Name != layout.AgentImage {
		t.Errorf("image %q, want %q", img.Name, layout.AgentImage)
	}
	if f := img.Files["berth-agent"]; !bytes.Equal(f.Data, self) {
		t.Errorf("the layer's berth-agent (%d bytes) is not the binary that wrote it (%d bytes)", len(f.Data), len(self))
	}
	if err := exec.Command(agent, "image").Run(); err == nil {
		t.Error("image without -o succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 64 {
		t.Errorf("image without -o: %v, want exit 64", err)
	}
}
