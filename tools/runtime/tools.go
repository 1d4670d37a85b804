//go:build tools

// Package tools pins the container runtime that berth installs as static binaries on targets whose archive is too
// old or lacks it (Ubuntu 16.04, 22.04, 24.04): containerd v2 (kubelet ≥1.38 needs containerd 2.x), runc, and the
// CNI plugins berth uses. Build with `tools/build.sh runtime`.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
	_ "github.com/opencontainers/runc"
)
