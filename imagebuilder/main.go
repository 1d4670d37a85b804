// Command packer-plugin-berth is berth's Packer plugin: the berth-disk builder bakes a bootable Kubernetes node
// image (raw, qcow2, fixed VHD) without a cloud, and proves it by booting it; the berth-node provisioner installs
// the same payload over a communicator, for the cloud builders and Packer's qemu builder.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/plugin"

	"berth.dev/berth/imagebuilder/builder/disk"
	"berth.dev/berth/imagebuilder/provisioner/node"
	"berth.dev/berth/imagebuilder/version"
)

func main() {
	pps := plugin.NewSet()
	pps.RegisterBuilder("disk", new(disk.Builder))
	pps.RegisterProvisioner("node", new(node.Provisioner))
	pps.SetVersion(version.PluginVersion)
	if err := pps.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err.Error())
		os.Exit(1)
	}
}
