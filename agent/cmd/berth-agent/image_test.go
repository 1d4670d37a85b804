package main

import (
	"testing"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/toolbin"
)

// `berth-agent image -o FILE` writes the image of that very binary, named layout.AgentImage (what
// deploy/shares.yaml's provisioner runs), /berth-agent in its layer.
func TestImageOfItself(t *testing.T) {
	images.CheckImageOfItself(t, toolbin.Agent(t), layout.AgentImage, "berth-agent")
}
