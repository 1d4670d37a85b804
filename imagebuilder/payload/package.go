package payload

import (
	"fmt"
	"regexp"
	"strings"

	"berth.dev/berth/imagebuilder/version"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/systemd"
)

// Package is a Debian package the image installs with dpkg, the same .deb a user installs by hand on an existing
// VM. Files are its contents; the maintainer scripts are POSIX shell that works from Ubuntu 16.04 on.
type Package struct {
	Name, Version, Arch, Description string
	Depends                          []string
	Files                            []File
	PostInst, PreRm, PostRm          string
}

// FileName is the package's conventional file name, name_version_arch.deb.
func (p Package) FileName() string { return fmt.Sprintf("%s_%s_%s.deb", p.Name, p.Version, p.Arch) }

var (
	// debVersion is what dpkg accepts as an upstream version (no epoch, no revision).
	debVersion = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	debName    = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
)

// Validate returns every problem with the package, naming the field.
func (p Package) Validate() error {
	var errs []string
	if !debName.MatchString(p.Name) {
		errs = append(errs, fmt.Sprintf("name: %q is not a Debian package name", p.Name))
	}
	if !debVersion.MatchString(p.Version) {
		errs = append(errs, fmt.Sprintf("version: %q is not a Debian version (digits first; letters, digits, . + ~)", p.Version))
	}
	if p.Arch == "" {
		errs = append(errs, "arch: required")
	}
	for i, f := range p.Files {
		if !strings.HasPrefix(f.Path, "/") || f.Link != "" {
			errs = append(errs, fmt.Sprintf("files[%d]: %q must be an absolute path to a regular file", i, f.Path))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("package %s: %s", p.Name, strings.Join(errs, "; "))
	}
	return nil
}

// AgentPackageName is the agent's Debian package.
const AgentPackageName = "berth-agent"

// DebVersion is berth's version as Debian orders it: a prerelease sorts before its release (0.1.0~dev < 0.1.0).
func DebVersion() string {
	if version.VersionPrerelease == "" {
		return version.Version
	}
	return version.Version + "~" + version.VersionPrerelease
}

// AgentPackage is the berth-agent package: the static agent binary, its unit and the kubelet and kube-proxy units
// it starts. A first install enables the agent (deb-systemd-helper, which works in a chroot too); where systemd
// runs, every install and upgrade (re)starts the agent if it is enabled (it waits for a NodeConfig, or re-applies
// the one it has), so an administrator's disable survives upgrades. Removal stops the agent, kube-proxy and the
// kubelet (their units go with the package); a purge forgets the enablement. deb-systemd-invoke honours
// policy-rc.d, so image builds on a running machine can keep the agent from starting.
func AgentPackage(agentPath, version string) (Package, error) {
	p := Package{
		Name: AgentPackageName, Version: version, Arch: "amd64",
		Description: "berth node agent: joins this machine to a hosted Kubernetes control plane\n" +
			"It reads its NodeConfig from /etc/berth/config.d (cloud-init writes it), bootstraps the kubelet's\n" +
			"credentials with a bootstrap token, and starts containerd, the kubelet and kube-proxy through systemd.",
		Depends: []string{"systemd", "init-system-helpers"},
		Files:   []File{{Path: layout.AgentBinary, Mode: 0o755, Source: agentPath}},
	}
	var enabled, all []string
	for _, u := range systemd.Units() {
		data, err := systemd.Unit(u)
		if err != nil {
			return Package{}, err
		}
		p.Files = append(p.Files, File{Path: layout.UnitDir + "/" + u, Mode: 0o644, Data: data})
		all = append(all, u)
		if systemd.Enabled(u) {
			enabled = append(enabled, u)
		}
	}
	on := strings.Join(enabled, " ")
	p.PostInst = fmt.Sprintf(`#!/bin/sh
# %[1]s postinst: enable on first install; where systemd runs, (re)start what is enabled.
set -e
[ "$1" = configure ] || exit 0
if [ -z "$2" ]; then
	for u in %[2]s; do deb-systemd-helper enable "$u"; done
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload
	for u in %[2]s; do
		if systemctl --quiet is-enabled "$u"; then deb-systemd-invoke restart "$u"; fi
	done
fi
`, p.Name, on)
	p.PreRm = fmt.Sprintf(`#!/bin/sh
# %[1]s prerm: on removal stop the agent and the units it started; their unit files leave with the package.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	deb-systemd-invoke stop %[2]s || true
fi
`, p.Name, strings.Join(all, " "))
	p.PostRm = fmt.Sprintf(`#!/bin/sh
# %[1]s postrm: a purge forgets the enablement. The node's state (/etc/berth, /var/lib/kubelet) is left alone.
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
if [ "$1" = purge ]; then
	for u in %[2]s; do deb-systemd-helper purge "$u" || true; done
fi
`, p.Name, on)
	return p, p.Validate()
}
