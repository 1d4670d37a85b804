// Package images builds, for tests, the images the local cloud's node image carries: the pause image from this
// tree's berth-pause (built by import path, so it works from any package directory of the module) and busybox.
package images

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	devimages "berth.dev/berth/internal/dev/images"
)

const (
	// Pause is the pod sandbox image reference.
	Pause = devimages.Pause
	// Busybox is the small image with a shell.
	Busybox = devimages.Busybox
)

// Built are the image tarballs.
type Built = devimages.Built

// Build writes both images into dir.
func Build(dir string) (Built, error) {
	b := Built{Pause: filepath.Join(dir, "pause.oci.tar"), Busybox: filepath.Join(dir, "busybox.oci.tar")}
	pauseBin := filepath.Join(dir, "berth-pause")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", pauseBin, "berth.dev/berth/imagebuilder/cmd/berth-pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Built{}, fmt.Errorf("build pause: %w: %s", err, out)
	}
	// The pause binary writes its own image, as `make plugin` has it do for users.
	if out, err := exec.Command(pauseBin, "image", "-o", b.Pause).CombinedOutput(); err != nil {
		return Built{}, fmt.Errorf("berth-pause image: %w: %s", err, out)
	}
	return b, devimages.WriteBusybox(b.Busybox)
}
