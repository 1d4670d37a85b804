package componentimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/images"
)

// Each component's image is named for it (layout's constants) and its layer holds the given binary, executable,
// at the component's path, its entrypoint; a missing binary is an error naming the component.
func TestImageHoldsTheBinary(t *testing.T) {
	for _, c := range []struct {
		c           Component
		image, path string
	}{{Logs, layout.LogsImage, "berth-logs"}, {Agent, layout.AgentImage, "berth-agent"}} {
		dir := t.TempDir()
		bin, out := filepath.Join(dir, "bin"), filepath.Join(dir, "image.oci.tar")
		if err := os.WriteFile(bin, []byte("\x7fELF "+c.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := c.c.Write(out, bin); err != nil {
			t.Fatal(err)
		}
		img := images.Read(t, out)
		if img.Name != c.image || strings.Join(img.Entrypoint, " ") != "/"+c.path {
			t.Errorf("image %q, entrypoint %q; want %q, /%s", img.Name, img.Entrypoint, c.image, c.path)
		}
		if f := img.Files[c.path]; string(f.Data) != "\x7fELF "+c.path || f.Mode&0o111 == 0 {
			t.Errorf("%s in the layer: %q, mode %o", c.path, f.Data, f.Mode)
		}
		if _, err := c.c.Write(filepath.Join(dir, "none.oci.tar"), filepath.Join(dir, "none")); err == nil || !strings.Contains(err.Error(), c.c.What+" image") {
			t.Errorf("a missing binary: %v", err)
		}
	}
}
