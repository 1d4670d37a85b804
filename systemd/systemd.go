// Package systemd holds berth's unit files. The image builder installs these bytes and the agent starts
// the units through systemd's D-Bus API, so both halves share one copy. Every unit must work on systemd 229
// (Ubuntu 16.04): no ReadWritePaths=, StateDirectory=, DynamicUser= or ProtectSystem=strict.
package systemd

import (
	"embed"

	"berth.dev/berth/internal/node/layout"
)

//go:embed units/*
var units embed.FS

//go:embed runtime/*
var runtime embed.FS

// Unit returns the content of a unit file by name (e.g. "kubelet.service").
func Unit(name string) ([]byte, error) { return units.ReadFile("units/" + name) }

// Units lists the unit files, sorted.
func Units() []string {
	entries, _ := units.ReadDir("units")
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// Enabled reports whether the image enables the unit: the agent, which starts containerd, the kubelet and
// kube-proxy itself once it has written their configuration, and the share drivers' plugin, which needs no
// configuration (the kubelet registers it whenever it starts).
func Enabled(unit string) bool { return unit == layout.AgentUnit || unit == layout.SharesUnit }

// RuntimeUnits are the units of the static container runtime, installed only on targets whose archive does not
// provide one (their packages ship their own units otherwise), by name.
func RuntimeUnits() map[string][]byte {
	entries, _ := runtime.ReadDir("runtime")
	out := map[string][]byte{}
	for _, e := range entries {
		data, _ := runtime.ReadFile("runtime/" + e.Name())
		out[e.Name()] = data
	}
	return out
}
