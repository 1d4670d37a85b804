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

	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/install"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/imagebuilder/precache"
)

// Provisioner is the berth-node provisioner.
type Provisioner struct {
	config Config
}

func (p *Provisioner) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

func (p *Provisioner) Prepare(raws ...interface{}) error { return p.config.Prepare(raws...) }

// Provision runs the one install sequence (imagebuilder/install) over the communicator: missing packages, files,
// the agent's .deb with starts denied, sysctls and modules and containerd (re)started, pre-cached images, then
// sealing.
func (p *Provisioner) Provision(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, _ map[string]interface{}) error {
	c := &p.config
	pl, err := payload.Build(c.profile, c.inputs())
	if err != nil {
		return err
	}
	r := &remote{ctx: ctx, ui: ui, comm: comm, staging: c.StagingDir}
	if out, err := r.output("id -u"); err != nil {
		return err
	} else if strings.TrimSpace(out) != "0" {
		r.sudo = true
	}
	if err := r.run("rm -rf " + install.Quote(c.StagingDir) + " && mkdir -p " + install.Quote(c.StagingDir)); err != nil {
		return err
	}
	if _, err := install.Run(ctx, r, pl, c.profile, install.Options{InstallPackages: *c.InstallPackages, Seal: *c.Seal,
		Say: func(msg string) { ui.Say("berth-node: " + msg) }}); err != nil {
		return err
	}
	return r.run("rm -rf " + install.Quote(c.StagingDir))
}

// Put installs f: uploaded to the staging directory, then install(1), which writes the target under a temporary
// name and renames it (never a half-written binary); a link with ln -sfn.
func (r *remote) Put(_ context.Context, f payload.File) error {
	if f.Link != "" {
		return r.run(fmt.Sprintf("mkdir -p %s && ln -sfn %s %s", install.Quote(path.Dir(f.Path)), install.Quote(f.Link), install.Quote(f.Path)))
	}
	r.staged++
	staged := path.Join(r.staging, fmt.Sprint(r.staged))
	if err := upload(r.comm, staged, f); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return r.run(fmt.Sprintf("install -D -m %04o %s %s && rm -f %s", f.Mode, install.Quote(staged), install.Quote(f.Path), install.Quote(staged)))
}

// Shell runs the script as root.
func (r *remote) Shell(_ context.Context, script string) error { return r.run(script) }

// Activate re-reads units, applies sysctls, loads the modules and restarts containerd onto its config.
func (r *remote) Activate(_ context.Context, pl payload.Payload, p distro.Profile) error {
	r.ui.Say("berth-node: applying sysctls and modules, starting containerd")
	return r.run(install.ActivateScript(pl, p))
}

// ImportImages imports the tarballs with the machine's ctr and lists the image names containerd holds.
func (r *remote) ImportImages(_ context.Context, tarballs []string) ([]string, error) {
	var script []string
	for _, img := range tarballs {
		script = append(script, "ctr -n k8s.io images import "+install.Quote(img)+" >/dev/null")
	}
	script = append(script, "ctr -n k8s.io images ls -q")
	out, err := r.output(strings.Join(script, " && "))
	if err != nil {
		return nil, err
	}
	return precache.ImageNames(out), nil
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
	ctx     context.Context
	ui      packersdk.Ui
	comm    packersdk.Communicator
	sudo    bool
	staging string // directory for uploads
	staged  int    // uploads so far (each gets its own name)
}

func (r *remote) output(script string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmdline := "sh -c " + install.Quote(script)
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

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
