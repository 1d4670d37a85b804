// Package distro is the one table of distro differences for node images. Everything that differs between the
// targets (archive, packages, how the runtime is installed, cgroup version, systemd features, filesystem
// features) is a field here; renderers and steps read the profile instead of testing distro names.
package distro

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// RuntimeSource says where containerd, runc and the CNI plugins come from.
type RuntimeSource string

const (
	// RuntimeFromArchive installs the distro's own packages (Debian 12: containerd 1.6.20, runc 1.1.5, CNI 1.1.1).
	RuntimeFromArchive RuntimeSource = "archive"
	// RuntimeStatic installs static binaries built from the module proxy (the archive's are too old or absent).
	RuntimeStatic RuntimeSource = "static"
)

// Profile describes one target.
type Profile struct {
	Name    string // debian-12, ubuntu-16.04, ...
	Vendor  string // debian, ubuntu
	Suite   string // bookworm, xenial, ...
	Version string // 12, 16.04, ...
	// Sources are the apt sources of the archive, in sources.list one-line form without "deb "; the first is the
	// main mirror, which a user may replace (mirror option).
	Sources []string
	// Kernel is the kernel package.
	Kernel string
	// Packages are installed besides the kernel (without versions: the archive's current ones; the manifest
	// records what was installed).
	Packages []string
	// Runtime says where containerd, runc and CNI plugins come from.
	Runtime RuntimeSource
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
	// Ext4Features are mkfs.ext4 -O adjustments so the target's e2fsck and kernel accept the root filesystem.
	Ext4Features []string
	// Network is how the target configures networking: ifupdown (ENI), netplan.
	Network string
	// BuiltHere is true when the archive is reachable from this machine, so the profile is baked and booted in
	// tests; the others are covered by golden tests of everything they render.
	BuiltHere bool
}

// common are the packages every node image gets on top of the kernel and runtime.
var common = []string{
	"systemd-sysv", "dbus", "udev", "kmod", "iproute2", "netbase", "ca-certificates", "cloud-init",
	"openssh-server", "procps", "iptables", "nftables", "conntrack", "ethtool", "socat", "cifs-utils",
	"nfs-common", "e2fsprogs", "less",
}

var profiles = map[string]Profile{
	"debian-12": {
		Name: "debian-12", Vendor: "debian", Suite: "bookworm", Version: "12",
		Sources: []string{
			"http://deb.debian.org/debian bookworm main",
			"http://deb.debian.org/debian bookworm-updates main",
			"http://deb.debian.org/debian-security bookworm-security main",
		},
		Kernel:                  "linux-image-cloud-amd64",
		Packages:                append([]string{"ifupdown", "isc-dhcp-client", "containerd", "runc", "containernetworking-plugins"}, common...),
		Runtime:                 RuntimeFromArchive,
		CNIBinDir:               "/usr/lib/cni",
		Systemd:                 252,
		CgroupDriver:            "systemd",
		ContainerdConfigVersion: 2,
		ResolvConf:              "/etc/resolv.conf",
		Ext4Features:            []string{"^orphan_file"}, // e2fsprogs 1.47 feature; keep the fs readable by any 1.46+ tool
		Network:                 "ifupdown",
		BuiltHere:               true,
	},
	"ubuntu-16.04": {
		Name: "ubuntu-16.04", Vendor: "ubuntu", Suite: "xenial", Version: "16.04",
		Sources: []string{
			"http://archive.ubuntu.com/ubuntu xenial main universe",
			"http://archive.ubuntu.com/ubuntu xenial-updates main universe",
			"http://security.ubuntu.com/ubuntu xenial-security main universe",
		},
		Kernel:                  "linux-image-virtual",
		Packages:                append([]string{"ifupdown", "isc-dhcp-client"}, common...),
		Runtime:                 RuntimeStatic, // xenial's runc/containerd are far too old for CRI v1
		CNIBinDir:               "/opt/cni/bin",
		CgroupV1:                true, // kernel 4.4/4.15
		Systemd:                 229,
		CgroupDriver:            "cgroupfs",
		ContainerdConfigVersion: 3,
		ResolvConf:              "/etc/resolv.conf",
		// e2fsprogs 1.42.13 knows none of these.
		Ext4Features: []string{"^metadata_csum", "^metadata_csum_seed", "^orphan_file", "^64bit"},
		Network:      "ifupdown",
	},
	"ubuntu-22.04": {
		Name: "ubuntu-22.04", Vendor: "ubuntu", Suite: "jammy", Version: "22.04",
		Sources: []string{
			"http://archive.ubuntu.com/ubuntu jammy main universe",
			"http://archive.ubuntu.com/ubuntu jammy-updates main universe",
			"http://security.ubuntu.com/ubuntu jammy-security main universe",
		},
		Kernel:                  "linux-image-virtual",
		Packages:                append([]string{"netplan.io"}, common...),
		Runtime:                 RuntimeStatic, // kubelet ≥1.38 needs containerd 2.x
		CNIBinDir:               "/opt/cni/bin",
		Systemd:                 249,
		CgroupDriver:            "systemd",
		ContainerdConfigVersion: 3,
		ResolvConf:              "/run/systemd/resolve/resolv.conf",
		Ext4Features:            []string{"^orphan_file", "^metadata_csum_seed"}, // e2fsprogs 1.46.5
		Network:                 "netplan",
	},
	"ubuntu-24.04": {
		Name: "ubuntu-24.04", Vendor: "ubuntu", Suite: "noble", Version: "24.04",
		Sources: []string{
			"http://archive.ubuntu.com/ubuntu noble main universe",
			"http://archive.ubuntu.com/ubuntu noble-updates main universe",
			"http://security.ubuntu.com/ubuntu noble-security main universe",
		},
		Kernel:                  "linux-image-virtual",
		Packages:                append([]string{"netplan.io"}, common...),
		Runtime:                 RuntimeStatic,
		CNIBinDir:               "/opt/cni/bin",
		Systemd:                 255,
		CgroupDriver:            "systemd",
		ContainerdConfigVersion: 3,
		ResolvConf:              "/run/systemd/resolve/resolv.conf",
		Ext4Features:            []string{"^orphan_file"}, // e2fsprogs 1.47.0 without the orphan_file default
		Network:                 "netplan",
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

// WithMirror returns the profile's sources with the main archive replaced by mirror (the same URL for every
// source of the main archive; the security archive stays unless the mirror serves it too).
func (p Profile) WithMirror(mirror string) []string {
	if mirror == "" {
		return p.Sources
	}
	main := strings.Fields(p.Sources[0])[0]
	out := make([]string, len(p.Sources))
	for i, s := range p.Sources {
		out[i] = strings.Replace(s, main, strings.TrimRight(mirror, "/"), 1)
	}
	return out
}

// AllPackages is the kernel and the packages, sorted.
func (p Profile) AllPackages() []string {
	pkgs := append([]string{p.Kernel}, p.Packages...)
	sort.Strings(pkgs)
	return pkgs
}

// ImageProfileFile records, inside a baked image, which profile it was baked from; the agent renders for it.
const ImageProfileFile = "/usr/lib/berth/profile"

// ImageProfile reads the profile name recorded in the image whose root is root.
func ImageProfile(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, ImageProfileFile))
	if err != nil {
		return "", fmt.Errorf("which distro profile this image has: %w", err)
	}
	name := strings.TrimSpace(string(data))
	if _, err := Get(name); err != nil {
		return "", fmt.Errorf("%s: %w", ImageProfileFile, err)
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
