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

// `berth-logs image -o FILE` writes the image of that very binary: named layout.LogsImage (what deploy/logs.yaml
// runs), its layer's /berth-logs byte for byte the binary that wrote it; it prints the path. Without -o it is a
// usage error.
func TestImageOfItself(t *testing.T) {
	shipper := toolbin.Logs(t)
	out := filepath.Join(t.TempDir(), "logs.oci.tar")
	got, err := exec.Command(shipper, "image", "-o", out).Output()
	if err != nil || strings.TrimSpace(string(got)) != out {
		t.Fatalf("image: %v, printed %q", err, got)
	}
	self, err := os.ReadFile(shipper)
	if err != nil {
		t.Fatal(err)
	}
	img := images.Read(t, out)
	if img.Name != layout.LogsImage {
		t.Errorf("image %q, want %q", img.Name, layout.LogsImage)
	}
	if f := img.Files["berth-logs"]; !bytes.Equal(f.Data, self) {
		t.Errorf("the layer's berth-logs (%d bytes) is not the binary that wrote it (%d bytes)", len(f.Data), len(self))
	}
	if err := exec.Command(shipper, "image").Run(); err == nil {
		t.Error("image without -o succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 64 {
		t.Errorf("image without -o: %v, want exit 64", err)
	}
}
