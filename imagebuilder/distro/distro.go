// Package distro is the bake-time half of the distro profiles: the archive, kernel, packages, how the container
// runtime is installed and what the root filesystem must look like for each target. It embeds the run-time half
// (internal/node/distro: cgroup driver, containerd schema, CNI dir, systemd version), which the agent reads from
// the image; renderers and steps read a profile instead of testing distro names.
package distro

import (
	"fmt"
	"sort"
	"strings"

	nodedistro "berth.dev/berth/internal/node/distro"
)

// RuntimeSource says where containerd, runc and the CNI plugins come from.
type RuntimeSource string

const (
	// RuntimeFromArchive installs the distro's own packages (Debian 12: containerd 1.6.20, runc 1.1.5, CNI 1.1.1).
	RuntimeFromArchive RuntimeSource = "archive"
	// RuntimeStatic installs static binaries built from the module proxy (the archive's are too old or absent).
	RuntimeStatic RuntimeSource = "static"
)

// Profile describes how to bake one target; Node is what the running node needs of it.
type Profile struct {
	nodedistro.Profile
	Suite string // bookworm, xenial, ...
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

// bake holds the bake-time fields by profile name; Get joins them with the run-time profile of the same name.
var bake = map[string]Profile{
	"debian-12": {
		Suite: "bookworm",
		Sources: []string{
			"http://deb.debian.org/debian bookworm main",
			"http://deb.debian.org/debian bookworm-updates main",
			"http://deb.debian.org/debian-security bookworm-security main",
		},
		Kernel:       "linux-image-cloud-amd64",
		Packages:     append([]string{"ifupdown", "isc-dhcp-client", "containerd", "runc", "containernetworking-plugins"}, common...),
		Runtime:      RuntimeFromArchive,
		Ext4Features: []string{"^orphan_file"}, // e2fsprogs 1.47 feature; keep the fs readable by any 1.46+ tool
		Network:      "ifupdown",
		BuiltHere:    true,
	},
	"ubuntu-16.04": {
		Suite: "xenial",
		Sources: []string{
			"http://archive.ubuntu.com/ubuntu xenial main universe",
			"http://archive.ubuntu.com/ubuntu xenial-updates main universe",
			"http://security.ubuntu.com/ubuntu xenial-security main universe",
		},
		Kernel:   "linux-image-virtual",
		Packages: append([]string{"ifupdown", "isc-dhcp-client"}, common...),
		Runtime:  RuntimeStatic, // xenial's runc/containerd are far too old for CRI v1
		// e2fsprogs 1.42.13 knows none of these.
		Ext4Features: []string{"^metadata_csum", "^metadata_csum_seed", "^orphan_file", "^64bit"},
		Network:      "ifupdown",
	},
	"ubuntu-22.04": {
		Suite: "jammy",
		Sources: []string{
			"http://archive.ubuntu.com/ubuntu jammy main universe",
			"http://archive.ubuntu.com/ubuntu jammy-updates main universe",
			"http://security.ubuntu.com/ubuntu jammy-security main universe",
		},
		Kernel:       "linux-image-virtual",
		Packages:     append([]string{"netplan.io"}, common...),
		Runtime:      RuntimeStatic,                                   // kubelet ≥1.38 needs containerd 2.x
		Ext4Features: []string{"^orphan_file", "^metadata_csum_seed"}, // e2fsprogs 1.46.5
		Network:      "netplan",
	},
	"ubuntu-24.04": {
		Suite: "noble",
		Sources: []string{
			"http://archive.ubuntu.com/ubuntu noble main universe",
			"http://archive.ubuntu.com/ubuntu noble-updates main universe",
			"http://security.ubuntu.com/ubuntu noble-security main universe",
		},
		Kernel:       "linux-image-virtual",
		Packages:     append([]string{"netplan.io"}, common...),
		Runtime:      RuntimeStatic,
		Ext4Features: []string{"^orphan_file"}, // e2fsprogs 1.47.0 without the orphan_file default
		Network:      "netplan",
	},
}

// Get returns the named profile: its bake-time fields and its run-time profile.
func Get(name string) (Profile, error) {
	node, err := nodedistro.Get(name)
	if err != nil {
		return Profile{}, err
	}
	p, ok := bake[name]
	if !ok {
		return Profile{}, fmt.Errorf("distro %q has no bake profile", name)
	}
	p.Profile = node
	return p, nil
}

// Names lists the profiles that can be baked, sorted.
func Names() []string {
	var names []string
	for n := range bake {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Node is the run-time profile the baked node renders with.
func (p Profile) Node() nodedistro.Profile { return p.Profile }

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
