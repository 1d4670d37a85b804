// Package agentimage makes berth's agent image (layout.AgentImage): one layer holding the static berth-agent
// binary as /berth-agent, for the roles the agent runs as pods (the log shipper's DaemonSet). Every node image
// pre-caches the image of its own agent, so the DaemonSet needs no registry, as the pause image does not.
package agentimage

import (
	"bytes"
	"fmt"

	"berth.dev/berth/imagebuilder/ociimage"
	"berth.dev/berth/internal/node/layout"
)

// FileName is the image's tarball name in the node image's layout.ImageDir.
const FileName = "berth-agent.oci.tar"

// Tarball is the agent image of the agent binary at bin, as an OCI image-layout tarball.
func Tarball(bin string) ([]byte, error) {
	f, err := ociimage.FromHostFile(bin, "/berth-agent")
	if err != nil {
		return nil, fmt.Errorf("agent image: %w", err)
	}
	var buf bytes.Buffer
	if _, err := ociimage.Write(&buf, ociimage.Image{Name: layout.AgentImage, Entrypoint: []string{"/berth-agent"}, Files: []ociimage.File{f}}); err != nil {
		return nil, fmt.Errorf("agent image: %w", err)
	}
	return buf.Bytes(), nil
}
