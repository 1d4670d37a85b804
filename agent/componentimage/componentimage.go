// Package componentimage writes the images of berth's cluster-side components as OCI image-layout tarballs: one
// layer holding the component's static binary, its entrypoint. No registry is needed: each binary writes its own
// image (`berth-logs image`, `berth-agent image`), the image pipeline passes the tarballs to the bake with the
// pause image, and every node image pre-caches them.
package componentimage

import (
	"flag"
	"fmt"
	"io"
	"os"

	"berth.dev/berth/internal/node/exitcode"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/internal/ociimage"
)

// Component is an image and where its binary is in it.
type Component struct {
	Image  string // the image's reference
	Binary string // the binary's path in the image, its entrypoint
	What   string // what it is, for messages
}

var (
	// Logs is the log shipper's image, which deploy/logs.yaml runs as a DaemonSet.
	Logs = Component{Image: layout.LogsImage, Binary: "/berth-logs", What: "log shipper"}
	// Agent is the agent's image, which deploy/shares.yaml runs as the share drivers' provisioner.
	Agent = Component{Image: layout.AgentImage, Binary: "/berth-agent", What: "agent"}
)

// Write writes the image holding the binary at bin to path (atomically) and returns the manifest digest.
func (c Component) Write(path, bin string) (string, error) {
	f, err := ociimage.FromHostFile(bin, c.Binary)
	if err != nil {
		return "", fmt.Errorf("%s image: %w", c.What, err)
	}
	return ociimage.WriteFile(path, ociimage.Image{Name: c.Image, Entrypoint: []string{c.Binary}, Files: []ociimage.File{f}})
}

// Cmd is a component's `image -o FILE` command: it writes the image of the very binary running it and prints the
// file's path.
func (c Component) Cmd(prog string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(prog+" image", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "the OCI image-layout tarball to write (required)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *out == "" {
		fmt.Fprintf(stderr, "usage: %s image -o FILE\n", prog)
		return exitcode.Usage
	}
	self, err := os.Executable()
	if err == nil {
		_, err = c.Write(*out, self)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return exitcode.Internal
	}
	fmt.Fprintln(stdout, *out)
	return exitcode.OK
}
