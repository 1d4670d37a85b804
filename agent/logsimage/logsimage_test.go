package logsimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/images"
)

// The image is named layout.LogsImage and its layer holds the given binary, executable, as /berth-logs, its
// entrypoint; a missing binary is an error naming the image.
func TestImageHoldsTheShipper(t *testing.T) {
	dir := t.TempDir()
	bin, out := filepath.Join(dir, "berth-logs"), filepath.Join(dir, "logs.oci.tar")
	if err := os.WriteFile(bin, []byte("\x7fELF the shipper"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(out, bin); err != nil {
		t.Fatal(err)
	}
	img := images.Read(t, out)
	if img.Name != layout.LogsImage || strings.Join(img.Entrypoint, " ") != "/berth-logs" {
		t.Errorf("image %q, entrypoint %q; want %q, /berth-logs", img.Name, img.Entrypoint, layout.LogsImage)
	}
	if f := img.Files["berth-logs"]; string(f.Data) != "\x7fELF the shipper" || f.Mode&0o111 == 0 {
		t.Errorf("berth-logs in the layer: %q, mode %o", f.Data, f.Mode)
	}
	if _, err := Write(filepath.Join(dir, "none.oci.tar"), filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), "log shipper image") {
		t.Errorf("a missing binary: %v", err)
	}
}
