// Package node is the berth-node Packer provisioner: it installs the same node payload as the berth-disk builder
// (imagebuilder/payload) over a Packer communicator, so teams can bake berth nodes with the cloud builders
// (azure-arm, amazon-ebs) or Packer's qemu builder.
package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/hashicorp/hcl/v2/hcldec"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"berth.dev/berth/imagebuilder/deb"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
)

// Provisioner is the berth-node provisioner.
type Provisioner struct {
	config Config
}

func (p *Provisioner) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

func (p *Provisioner) Prepare(raws ...interface{}) error { return p.config.Prepare(raws...) }

// Provision installs the payload: missing packages, files, sysctls and modules, the static runtime where the
// profile needs it, pre-cached images, then seals the machine.
func (p *Provisioner) Provision(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, _ map[string]interface{}) error {
	c := &p.config
	pl, err := payload.Build(c.profile, c.inputs())
	if err != nil {
		return err
	}
	r := &remote{ctx: ctx, ui: ui, comm: comm}
	if out, err := r.output("id -u"); err != nil {
		return err
	} else if strings.TrimSpace(out) != "0" {
		r.sudo = true
	}
	if *c.InstallPackages {
		ui.Say("berth-node: installing missing packages")
		if err := r.run(installMissing(c.profile)); err != nil {
			return fmt.Errorf("packages: %w", err)
		}
	}
	ui.Say(fmt.Sprintf("berth-node: installing %d payload files", len(pl.Files)))
	if err := r.run("rm -rf " + quote(c.StagingDir) + " && mkdir -p " + quote(c.StagingDir)); err != nil {
		return err
	}
	for i, f := range pl.Files {
		if f.Link != "" {
			if err := r.run(fmt.Sprintf("mkdir -p %s && ln -sfn %s %s", quote(path.Dir(f.Path)), quote(f.Link), quote(f.Path))); err != nil {
				return fmt.Errorf("install %s: %w", f.Path, err)
			}
			continue
		}
		staged := path.Join(c.StagingDir, fmt.Sprint(i))
		if err := upload(comm, staged, f); err != nil {
			return fmt.Errorf("upload %s: %w", f.Path, err)
		}
		// install(1) writes the target under a temporary name and renames it: never a half-written binary.
		if err := r.run(fmt.Sprintf("install -D -m %04o %s %s && rm -f %s", f.Mode, quote(staged), quote(f.Path), quote(staged))); err != nil {
			return fmt.Errorf("install %s: %w", f.Path, err)
		}
	}
	for i, pkg := range pl.Packages {
		ui.Say("berth-node: installing " + pkg.FileName())
		if err := r.installPackage(comm, pkg, path.Join(c.StagingDir, fmt.Sprintf("pkg-%d.deb", i))); err != nil {
			return fmt.Errorf("install %s: %w", pkg.FileName(), err)
		}
	}
	ui.Say("berth-node: applying sysctls and modules, starting containerd, importing images")
	script := []string{"systemctl daemon-reload", "sysctl --system >/dev/null", "modprobe overlay", "modprobe br_netfilter"}
	if c.profile.Runtime == distro.RuntimeStatic {
		script = append(script, "systemctl enable containerd.service")
	}
	script = append(script, "systemctl restart containerd.service", "for i in $(seq 50); do ctr version >/dev/null 2>&1 && break; sleep 0.2; done")
	for _, img := range pl.Images {
		script = append(script, "ctr -n k8s.io images import "+quote(img)+" >/dev/null")
	}
	if err := r.run(strings.Join(script, " && ")); err != nil {
		return err
	}
	if *c.Seal {
		ui.Say("berth-node: sealing (machine-id, SSH host keys, cloud-init state, logs)")
		if err := r.run(payload.SealScript); err != nil {
			return fmt.Errorf("seal: %w", err)
		}
	}
	return r.run("rm -rf " + quote(c.StagingDir))
}

// denyStarts keeps packages' maintainer scripts from starting services on the machine being baked (the agent would
// start waiting for a NodeConfig and leave state in the image): a policy-rc.d that denies everything, removed
// again unless the machine had one of its own.
const denyStarts = `created=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && created=1; fi
`

// installPackage writes pkg as a .deb, uploads it and installs it with dpkg, starts denied.
func (r *remote) installPackage(comm packersdk.Communicator, pkg payload.Package, staged string) error {
	dir, err := os.MkdirTemp("", "berth-node-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	local, err := deb.WriteFile(dir, pkg)
	if err != nil {
		return err
	}
	if err := upload(comm, staged, payload.File{Source: local}); err != nil {
		return err
	}
	return r.run(denyStarts + fmt.Sprintf(`rc=0; dpkg -i %[1]s || rc=$?
[ -z "$created" ] || rm -f /usr/sbin/policy-rc.d
rm -f %[1]s; exit $rc`, quote(staged)))
}

// installMissing installs the profile's packages that dpkg does not list as installed; with none missing it does
// nothing (and needs no network).
func installMissing(p distro.Profile) string {
	return fmt.Sprintf(`missing=""; for pkg in %s; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing="$missing $pkg"; done
if [ -n "$missing" ]; then echo "installing:$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing; fi`,
		strings.Join(p.AllPackages(), " "))
}

func upload(comm packersdk.Communicator, dst string, f payload.File) error {
	if f.Source == "" {
		return comm.Upload(dst, bytes.NewReader(f.Data), nil)
	}
	src, err := os.Open(f.Source)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	fi := os.FileInfo(st)
	return comm.Upload(dst, src, &fi)
}

// remote runs shell commands through the communicator, as root (sudo -n when the user is not root).
type remote struct {
	ctx  context.Context
	ui   packersdk.Ui
	comm packersdk.Communicator
	sudo bool
}

func (r *remote) output(script string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmdline := "sh -c " + quote(script)
	if r.sudo {
		cmdline = "sudo -n " + cmdline
	}
	cmd := &packersdk.RemoteCmd{Command: cmdline, Stdout: &stdout, Stderr: &stderr}
	if err := r.comm.Start(r.ctx, cmd); err != nil {
		return "", err
	}
	if code := cmd.Wait(); code != 0 {
		return stdout.String(), fmt.Errorf("remote command exited %d: %s", code, strings.TrimSpace(lastLines(stderr.String()+stdout.String(), 5)))
	}
	return stdout.String(), nil
}

func (r *remote) run(script string) error {
	_, err := r.output(script)
	return err
}

// quote makes s one shell word.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
