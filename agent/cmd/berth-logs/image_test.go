package main

import (
	"testing"

	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/toolbin"
)

// `berth-logs image -o FILE` writes the image of that very binary, named layout.LogsImage (what deploy/logs.yaml
// runs), /berth-logs in its layer.
func TestImageOfItself(t *testing.T) {
	images.CheckImageOfItself(t, toolbin.Logs(t), layout.LogsImage, "berth-logs")
}
