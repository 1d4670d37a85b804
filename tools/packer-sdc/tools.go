//go:build tools

// Package tools pins packer-sdc, the SDK's code and docs generator (mapstructure-to-hcl2, struct-markdown,
// plugin-check), at the SDK version the plugin uses. Build with `tools/build.sh packer-sdc`.
package tools

import _ "github.com/hashicorp/packer-plugin-sdk/cmd/packer-sdc"
