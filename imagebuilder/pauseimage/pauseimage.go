// Package pauseimage writes berth's pause image (layout.PauseImage, the node's default sandbox image) as an OCI
// image-layout tarball: one layer holding the berth-pause binary as /pause. No registry is needed: the image
// builder pre-caches the tarball in every node image.
package pauseimage

import (
	"fmt"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/internal/ociimage"
)

// Write writes the pause image holding the static pause binary at bin to path (atomically) and returns the
// manifest digest.
func Write(path, bin string) (string, error) {
	f, err := ociimage.FromHostFile(bin, "/pause")
	if err != nil {
		return "", fmt.Errorf("pause image: %w", err)
	}
	return ociimage.WriteFile(path, ociimage.Image{Name: layout.PauseImage, Entrypoint: []string{"/pause"}, Files: []ociimage.File{f}})
}
