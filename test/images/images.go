// Package images builds the container images that node tests pre-import (no registry is reachable here): the
// pause image from berth's own pause program, and busybox from Debian's busybox-static.
package images

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"berth.dev/berth/imagebuilder/ociimage"
	"berth.dev/berth/internal/node/layout"
)

const (
	// Pause is the pod sandbox image reference: the agent's default sandbox image.
	Pause = layout.PauseImage
	// Busybox is a small image with a shell and the usual applets.
	Busybox = "berth.dev/busybox:1.35"
)

// busyboxApplets are linked to /bin/busybox in the image.
var busyboxApplets = []string{"sh", "echo", "cat", "sleep", "ls", "hostname", "wget", "nc", "httpd", "env", "true", "false", "ip", "ps"}

// Built are OCI image-layout tarballs, ready for `ctr images import`.
type Built struct {
	Pause, Busybox string
}

// Build writes both images into dir.
func Build(dir string) (Built, error) {
	b := Built{Pause: filepath.Join(dir, "pause.oci.tar"), Busybox: filepath.Join(dir, "busybox.oci.tar")}
	pauseBin := filepath.Join(dir, "berth-pause")
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "..", "..", "imagebuilder", "cmd", "berth-pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pauseBin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Built{}, fmt.Errorf("build pause: %w: %s", err, out)
	}
	// The pause binary writes its own image, as `make plugin` has it do for users.
	if out, err := exec.Command(pauseBin, "image", "-o", b.Pause).CombinedOutput(); err != nil {
		return Built{}, fmt.Errorf("berth-pause image: %w: %s", err, out)
	}
	bb, err := ociimage.FromHostFile("/bin/busybox", "/bin/busybox")
	if err != nil {
		return Built{}, fmt.Errorf("busybox (apt package busybox-static; `make deps` installs it): %w", err)
	}
	files := []ociimage.File{bb}
	for _, a := range busyboxApplets {
		files = append(files, ociimage.File{Path: "/bin/" + a, Link: "busybox"})
	}
	if _, err := ociimage.WriteFile(b.Busybox, ociimage.Image{Name: Busybox, Cmd: []string{"sh"}, Files: files,
		Env: []string{"PATH=/bin"}}); err != nil {
		return Built{}, err
	}
	return b, nil
}
