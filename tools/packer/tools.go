//go:build tools

// Package tools pins Packer for berth's image tests: v1.9.4, the newest the module proxy serves here (and the
// last MPL release line). It bundles the qemu builder. Build with `tools/build.sh packer`.
package tools

import _ "github.com/hashicorp/packer"
