// Package install is the one install sequence of a node payload. The image builder runs it into a system tree
// (Tree: files written under the root, commands in a chroot, images imported by a containerd rooted in the tree);
// the Packer provisioner runs it over a communicator on a live machine. The steps, their order, the module list
// and the policy that keeps packages from starting services on the machine being baked are written once, here.
package install

import (
	"context"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"

	"berth.dev/berth/imagebuilder/deb"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
)

// Target is where the payload lands and its commands run.
type Target interface {
	// Put writes f (its Data or its local Source file, with its Mode; or a symlink to Link) at f.Path, never
	// leaving a half-written file there.
	Put(ctx context.Context, f payload.File) error
	// Shell runs a POSIX sh script as root on the target.
	Shell(ctx context.Context, script string) error
	// Activate makes a live machine take up what was installed (unit files, sysctls, modules, containerd's
	// config); a tree has nothing running and does nothing.
	Activate(ctx context.Context, pl payload.Payload, p distro.Profile) error
	// ImportImages imports the image tarballs (paths on the target) into containerd's k8s.io namespace and
	// returns the image names it then holds.
	ImportImages(ctx context.Context, tarballs []string) ([]string, error)
}

// Options choose the optional steps.
type Options struct {
	// InstallPackages installs the profile's packages that dpkg does not list (apt; nothing when none are missing).
	InstallPackages bool
	// SandboxImage must be among the images the target holds afterwards.
	SandboxImage string
	// Seal runs payload.SealScript last.
	Seal bool
	// Say reports each step (nil: quiet).
	Say func(string)
}

// Result is what the sequence left on the target.
type Result struct {
	Images []string // image names containerd holds
}

// Run installs pl on t for profile p, in order: missing packages, files, the .deb packages (starts denied),
// activation, images (the sandbox image must be among them), sealing.
func Run(ctx context.Context, t Target, pl payload.Payload, p distro.Profile, o Options) (Result, error) {
	say := o.Say
	if say == nil {
		say = func(string) {}
	}
	var res Result
	if o.InstallPackages {
		say("installing missing packages")
		if err := t.Shell(ctx, MissingPackagesScript(p)); err != nil {
			return res, fmt.Errorf("packages: %w", err)
		}
	}
	say(fmt.Sprintf("installing %d payload files", len(pl.Files)))
	for _, f := range pl.Files {
		if err := t.Put(ctx, f); err != nil {
			return res, fmt.Errorf("install %s: %w", f.Path, err)
		}
	}
	for _, pkg := range pl.Packages {
		say("installing " + pkg.FileName())
		if err := installPackage(ctx, t, pkg); err != nil {
			return res, fmt.Errorf("install %s: %w", pkg.FileName(), err)
		}
	}
	if err := t.Activate(ctx, pl, p); err != nil {
		return res, fmt.Errorf("activate: %w", err)
	}
	say(fmt.Sprintf("importing %d images", len(pl.Images)))
	images, err := t.ImportImages(ctx, pl.Images)
	if err != nil {
		return res, fmt.Errorf("images: %w", err)
	}
	res.Images = images
	if o.SandboxImage != "" && !slices.Contains(images, o.SandboxImage) {
		return res, fmt.Errorf("sandbox_image: %s is not among the pre-cached images %v", o.SandboxImage, images)
	}
	if o.Seal {
		say("sealing (machine-id, SSH host keys, cloud-init state, logs)")
		if err := t.Shell(ctx, payload.SealScript); err != nil {
			return res, fmt.Errorf("seal: %w", err)
		}
	}
	return res, nil
}

// DenyStarts keeps packages' maintainer scripts from starting services while the image is baked (the agent would
// start waiting for a NodeConfig and leave state in the image): a policy-rc.d that denies everything, removed
// again unless the machine had one of its own. The script it prefixes ends with the command's exit code.
func DenyStarts(script string) string {
	return `created=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && created=1; fi
rc=0; ( ` + script + ` ) || rc=$?
[ -z "$created" ] || rm -f /usr/sbin/policy-rc.d
exit $rc`
}

// installPackage writes pkg as a .deb, puts it on the target and installs it with the target's dpkg, starts denied.
func installPackage(ctx context.Context, t Target, pkg payload.Package) error {
	dir, err := os.MkdirTemp("", "berth-install-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	local, err := deb.WriteFile(dir, pkg)
	if err != nil {
		return err
	}
	staged := path.Join("/var/tmp", path.Base(local))
	if err := t.Put(ctx, payload.File{Path: staged, Mode: 0o644, Source: local}); err != nil {
		return err
	}
	return t.Shell(ctx, DenyStarts("dpkg -i "+Quote(staged))+"; rm -f "+Quote(staged))
}

// MissingPackagesScript installs the profile's packages that dpkg does not list as installed; with none missing it
// does nothing (and needs no network).
func MissingPackagesScript(p distro.Profile) string {
	return fmt.Sprintf(`missing=""; for pkg in %s; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$missing $pkg"; done
if [ -n "$missing" ]; then echo "installing:$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; fi`,
		strings.Join(p.AllPackages(), " "))
}

// ActivateScript is what a live machine runs after the install: re-read units, apply sysctls, load the payload's
// kernel modules, enable containerd where the static runtime brought it, and restart containerd onto its config.
func ActivateScript(pl payload.Payload, p distro.Profile) string {
	script := []string{"systemctl daemon-reload", "sysctl --system >/dev/null"}
	for _, m := range payload.ModuleList() {
		script = append(script, "modprobe "+m)
	}
	if p.Runtime == distro.RuntimeStatic {
		script = append(script, "systemctl enable containerd.service")
	}
	script = append(script, "systemctl restart containerd.service", "for i in $(seq 50); do ctr version >/dev/null 2>&1 && break; sleep 0.2; done")
	return strings.Join(script, " && ")
}

// Quote makes s one shell word.
func Quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
