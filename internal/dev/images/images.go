// Package images writes the container images the local cloud pre-caches in its node image (no registry is
// reachable here): busybox from Debian's busybox-static. The pause image is berth-pause's own (`berth-pause image`,
// which `make plugin` and `make demo` run); berth-dev takes its tarball.
package images

import (
	"fmt"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/internal/ociimage"
)

const (
	// Pause is the pod sandbox image reference: the agent's default sandbox image.
	Pause = layout.PauseImage
	// Busybox is a small image with a shell and the usual applets.
	Busybox = "berth.dev/busybox:1.35"
)

// busyboxApplets are linked to /bin/busybox in the image.
var busyboxApplets = []string{"sh", "echo", "cat", "sleep", "ls", "hostname", "wget", "nc", "httpd", "env", "true", "false", "ip", "ps", "nslookup"}

// Built are OCI image-layout tarballs, ready for `ctr images import`.
type Built struct {
	Pause, Busybox string
}

// WriteBusybox writes the busybox image, from this machine's /bin/busybox (apt package busybox-static), to path.
func WriteBusybox(path string) error {
	bb, err := ociimage.FromHostFile("/bin/busybox", "/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox (apt package busybox-static; `make deps` installs it): %w", err)
	}
	files := []ociimage.File{bb}
	for _, a := range busyboxApplets {
		files = append(files, ociimage.File{Path: "/bin/" + a, Link: "busybox"})
	}
	_, err = ociimage.WriteFile(path, ociimage.Image{Name: Busybox, Cmd: []string{"sh"}, Files: files, Env: []string{"PATH=/bin"}})
	return err
}
