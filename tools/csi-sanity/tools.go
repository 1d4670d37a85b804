//go:build tools

// Package tools pins csi-sanity, the CSI specification's conformance suite (github.com/kubernetes-csi/csi-test),
// which test/shares runs in a guest against the share drivers' sockets. Build with `tools/build.sh csi-sanity`.
package tools

import _ "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity"
