// Package tier gates tests by what they need, so the test tiers are explicit:
//
//   - unit (`make unit`, `go test -short`): no root, no network namespace, no Kubernetes binaries, no qemu,
//     systemd-nspawn or Packer. A test that needs any of them calls Require, which skips it in this tier and
//     names what it needs.
//   - everything else (`make test`, CI): Require checks each prerequisite; a missing one skips the test with the
//     reason, and under CI=true it fails the test instead, so CI never passes by skipping.
package tier

import (
	"os"
	"os/exec"
	"testing"
)

// Need is one prerequisite a test has beyond the unit tier.
type Need struct {
	// Name is what the skip or failure message names.
	Name string
	// missing says why the prerequisite is absent on this machine, or "".
	missing func() string
}

func command(name, pkg string) func() string {
	return func() string {
		if _, err := exec.LookPath(name); err != nil {
			return name + " is not on PATH (apt package " + pkg + "; make deps installs it)"
		}
		return ""
	}
}

var (
	// Root is uid 0: namespaces, mounts, cgroups, chroots.
	Root = Need{"root", func() string {
		if os.Geteuid() != 0 {
			return "not running as root"
		}
		return ""
	}}
	// NetNS is network namespaces, bridges and taps (needs root and ip).
	NetNS = Need{"network namespaces", func() string {
		if os.Geteuid() != 0 {
			return "not running as root"
		}
		return command("ip", "iproute2")()
	}}
	// Kubernetes is the pinned Kubernetes build (tools/build.sh k8s builds it on first use, about 10 minutes).
	Kubernetes = Need{"the pinned Kubernetes binaries", func() string { return "" }}
	// Packer is the pinned Packer build (tools/build.sh packer).
	Packer = Need{"the pinned Packer", func() string { return "" }}
	// QEMU is qemu-system-x86_64 and qemu-img for guests.
	QEMU = Need{"qemu", command("qemu-system-x86_64", "qemu-system-x86")}
	// Nspawn is systemd-nspawn for the systemd tier.
	Nspawn = Need{"systemd-nspawn", command("systemd-nspawn", "systemd-container")}
	// Containerd is containerd and runc from the archive (the host-tier node, image pre-caching).
	Containerd = Need{"containerd", command("containerd", "containerd")}
	// Dpkg is dpkg-deb (reading and installing the agent's package).
	Dpkg = Need{"dpkg-deb", command("dpkg-deb", "dpkg")}
	// NFT is the nft command, which kube-proxy's nftables mode runs (berth itself programs nftables over netlink).
	NFT = Need{"nft", command("nft", "nftables")}
	// Samba is Debian's smbd and smbpasswd, the share tests' SMB server.
	Samba = Need{"samba", command("smbd", "samba")}
	// Ganesha is nfs-ganesha with its VFS backend, the share tests' NFSv4 server (the host has no kernel nfsd).
	Ganesha = Need{"nfs-ganesha", command("ganesha.nfsd", "nfs-ganesha nfs-ganesha-vfs")}
	// VictoriaMetrics is Debian's victoria-metrics, the local cloud's metrics scraper.
	VictoriaMetrics = Need{"victoria-metrics", command("victoria-metrics", "victoria-metrics")}
	// JournalRemote is systemd-journal-remote, which writes real journal files from the export format (the log
	// shipper's journal tests), and journalctl, which reads them.
	JournalRemote = Need{"systemd-journal-remote and journalctl", func() string {
		if _, err := os.Stat(JournalRemoteBin); err != nil {
			return JournalRemoteBin + " is missing (apt package systemd-journal-remote; make deps installs it)"
		}
		return command("journalctl", "systemd")()
	}}
)

// JournalRemoteBin is where Debian puts systemd-journal-remote (not on PATH).
const JournalRemoteBin = "/lib/systemd/systemd-journal-remote"

// Built is a pinned tool that tools/build.sh builds from the module proxy on first use.
func Built(tool string) Need {
	return Need{"the pinned " + tool + " build (tools/build.sh " + tool + ")", func() string { return "" }}
}

// Present is Require for prerequisites the unit tier has too (tools every Debian machine has): it does not skip
// in the unit tier, only when the prerequisite is missing (failing under CI=true).
func Present(tb testing.TB, needs ...Need) {
	tb.Helper()
	for _, n := range needs {
		missing(tb, n)
	}
}

// Unit reports whether this run is the unit tier (go test -short).
func Unit() bool { return testing.Short() }

// Require skips the test in the unit tier; otherwise it skips (or, under CI=true, fails) when a prerequisite is
// missing, naming it.
func Require(tb testing.TB, needs ...Need) {
	tb.Helper()
	for _, n := range needs {
		if Unit() {
			tb.Skipf("unit tier (-short): needs %s; make test runs it", n.Name)
		}
		missing(tb, n)
	}
}

func missing(tb testing.TB, n Need) {
	tb.Helper()
	if why := n.missing(); why != "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("needs %s: %s (CI=true: a missing prerequisite fails)", n.Name, why)
		}
		tb.Skipf("needs %s: %s", n.Name, why)
	}
}
