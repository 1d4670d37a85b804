// Package logsimage writes the log shipper's image (layout.LogsImage, which deploy/logs.yaml runs as a DaemonSet)
// as an OCI image-layout tarball: one layer holding the static berth-logs binary as /berth-logs, its entrypoint.
// No registry is needed: the image pipeline passes the tarball to the bake with the pause image (`berth-logs image
// -o FILE` writes it of itself), and every node image pre-caches it.
package logsimage

import (
	"fmt"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/internal/ociimage"
)

// Write writes the image holding the berth-logs binary at bin to path (atomically) and returns the manifest
// digest.
func Write(path, bin string) (string, error) {
	f, err := ociimage.FromHostFile(bin, "/berth-logs")
	if err != nil {
		return "", fmt.Errorf("log shipper image: %w", err)
	}
	return ociimage.WriteFile(path, ociimage.Image{Name: layout.LogsImage, Entrypoint: []string{"/berth-logs"}, Files: []ociimage.File{f}})
}
