// Package distro is the run-time half of the distro profiles: what a running node needs to know about its OS to
// render its configuration (cgroup driver and version, containerd's config schema, where the CNI plugins are,
// systemd's version, which resolv.conf pods get). The bake-time half (archive, kernel, packages, filesystem
// features) is imagebuilder/distro, which embeds this profile; the agent never carries it.
package distro

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"berth.dev/berth/internal/node/layout"
)

// Profile is what the running node needs to know about its OS.
type Profile struct {
	Name    string // debian-12, ubuntu-16.04, ...
	Vendor  string // os-release ID: debian, ubuntu
	Version string // os-release VERSION_ID: 12, 16.04, ...
	// CNIBinDir is where the CNI plugins are (the archive's package or the static install).
	CNIBinDir string
	// CgroupV1 is true when the target boots with cgroup v1 only; kubelet ≥1.35 then needs failCgroupV1: false.
	CgroupV1 bool
	// Systemd is the target's systemd version; units and drop-ins may only use directives it knows.
	Systemd int
	// CgroupDriver is the kubelet's and containerd's cgroup driver: systemd where systemd manages a unified
	// hierarchy, cgroupfs on the cgroup v1 targets (what AKS ran on Ubuntu 16.04).
	CgroupDriver string
	// ContainerdConfigVersion is the config schema of the installed containerd: 2 for containerd 1.x, 3 for 2.x.
	ContainerdConfigVersion int
	// ResolvConf is the resolv.conf with real upstream servers for pods (systemd-resolved's when it runs the
	// stub at 127.0.0.53, which is unreachable from a pod).
	ResolvConf string
}

var profiles = map[string]Profile{
	"debian-12": {
		Name: "debian-12", Vendor: "debian", Version: "12",
		CNIBinDir: "/usr/lib/cni", Systemd: 252, CgroupDriver: "systemd", ContainerdConfigVersion: 2,
		ResolvConf: "/etc/resolv.conf",
	},
	"ubuntu-16.04": {
		Name: "ubuntu-16.04", Vendor: "ubuntu", Version: "16.04",
		CNIBinDir: "/opt/cni/bin", CgroupV1: true /* kernel 4.4/4.15 */, Systemd: 229, CgroupDriver: "cgroupfs",
		ContainerdConfigVersion: 3, ResolvConf: "/etc/resolv.conf",
	},
	"ubuntu-22.04": {
		Name: "ubuntu-22.04", Vendor: "ubuntu", Version: "22.04",
		CNIBinDir: "/opt/cni/bin", Systemd: 249, CgroupDriver: "systemd", ContainerdConfigVersion: 3,
		ResolvConf: "/run/systemd/resolve/resolv.conf",
	},
	"ubuntu-24.04": {
		Name: "ubuntu-24.04", Vendor: "ubuntu", Version: "24.04",
		CNIBinDir: "/opt/cni/bin", Systemd: 255, CgroupDriver: "systemd", ContainerdConfigVersion: 3,
		ResolvConf: "/run/systemd/resolve/resolv.conf",
	},
}

// Get returns the named profile.
func Get(name string) (Profile, error) {
	p, ok := profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("unknown distro %q: want one of %s", name, strings.Join(Names(), ", "))
	}
	return p, nil
}

// Names lists the profiles, sorted.
func Names() []string {
	var names []string
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ImageProfile reads the profile name recorded in the image whose root is root (layout.ProfileFile).
func ImageProfile(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, layout.ProfileFile))
	if err != nil {
		return "", fmt.Errorf("which distro profile this image has: %w", err)
	}
	name := strings.TrimSpace(string(data))
	if _, err := Get(name); err != nil {
		return "", fmt.Errorf("%s: %w", layout.ProfileFile, err)
	}
	return name, nil
}

// HostProfile is the profile of the system whose root is root: the one its image recorded, else (the agent's
// package installed by hand on an existing machine) the one matching /etc/os-release's ID and VERSION_ID.
func HostProfile(root string) (string, error) {
	name, err := ImageProfile(root)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return name, err
	}
	data, rerr := os.ReadFile(filepath.Join(root, "etc/os-release"))
	if rerr != nil {
		return "", fmt.Errorf("%w; %v", err, rerr)
	}
	id, version := osRelease(string(data), "ID"), osRelease(string(data), "VERSION_ID")
	for _, n := range Names() {
		if p, _ := Get(n); p.Vendor == id && p.Version == version {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w, and /etc/os-release (ID=%s VERSION_ID=%s) matches no profile (%s)", err, id, version, strings.Join(Names(), ", "))
}

// osRelease returns key's value from os-release content, unquoted.
func osRelease(content, key string) string {
	for _, line := range strings.Split(content, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+"="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}
