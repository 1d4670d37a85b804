// Package disk is the berth-disk Packer builder: it bakes a Kubernetes node image without a cloud (cached
// mmdebstrap rootfs, payload, sealing, offline disk assembly, conversions) and boots it under qemu to prove it.
// Each step runs one phase of imagebuilder/bake.
package disk

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"berth.dev/berth/imagebuilder/bake"
	imgdisk "berth.dev/berth/imagebuilder/disk"
)

// BuilderID identifies this builder's artifacts.
const BuilderID = "berth.disk"

// Builder is the berth-disk builder.
type Builder struct {
	config Config
	runner multistep.Runner
}

func (b *Builder) ConfigSpec() hcldec.ObjectSpec { return b.config.FlatMapstructure().HCL2Spec() }

func (b *Builder) Prepare(raws ...interface{}) ([]string, []string, error) {
	warnings, err := b.config.Prepare(raws...)
	return nil, warnings, err
}

// Run bakes the image. The steps, top to bottom, are the bake's phases.
func (b *Builder) Run(ctx context.Context, ui packersdk.Ui, hook packersdk.Hook) (packersdk.Artifact, error) {
	c := &b.config
	formats := make([]imgdisk.Format, len(c.Formats))
	for i, f := range c.Formats {
		formats[i] = imgdisk.Format(f)
	}
	work, err := os.MkdirTemp("", "berth-disk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	spec := &bake.Spec{
		Name: c.ImageName, Profile: c.profile, Mirror: c.Mirror,
		Inputs:   c.inputs(),
		Layout:   imgdisk.Layout{SizeMiB: c.DiskSizeMiB, RootUUID: c.RootUUID, Ext4Features: c.profile.Ext4Features},
		Formats:  formats,
		Compress: c.CompressQCOW2, OutputDir: c.OutputDir, WorkDir: work, CacheDir: c.CacheDir, RootfsMaxAge: c.rootfsMaxAge,
		KubernetesVersion: c.KubernetesVersion, SandboxImage: c.SandboxImage,
		BootCheck: *c.BootCheck, BootTimeout: c.bootTimeout,
		Log: slog.New(slog.NewTextHandler(uiWriter{ui}, nil)),
	}
	state := new(multistep.BasicStateBag)
	state.Put("ui", ui)
	state.Put("hook", hook)
	st := &bake.State{}
	steps := []multistep.Step{&stepOutputDir{path: c.OutputDir, force: c.PackerForce}}
	for _, p := range bake.Phases {
		steps = append(steps, &stepPhase{phase: p, spec: spec, st: st})
	}
	b.runner = &multistep.BasicRunner{Steps: steps}
	b.runner.Run(ctx, state)
	if err, ok := state.GetOk("error"); ok {
		return nil, err.(error)
	}
	if _, ok := state.GetOk(multistep.StateCancelled); ok {
		return nil, fmt.Errorf("build was cancelled")
	}
	if _, ok := state.GetOk(multistep.StateHalted); ok {
		return nil, fmt.Errorf("build was halted")
	}
	return newArtifact(spec, st), nil
}

// stepOutputDir creates the output directory (replacing it under -force) and removes it if the build fails.
type stepOutputDir struct {
	path    string
	force   bool
	created bool
}

func (s *stepOutputDir) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	if _, err := os.Stat(s.path); err == nil {
		if !s.force {
			state.Put("error", fmt.Errorf("output_dir: %s already exists (use -force to replace it)", s.path))
			return multistep.ActionHalt
		}
		if err := os.RemoveAll(s.path); err != nil {
			state.Put("error", fmt.Errorf("output_dir: %w", err))
			return multistep.ActionHalt
		}
	}
	if err := os.MkdirAll(s.path, 0o755); err != nil {
		state.Put("error", fmt.Errorf("output_dir: %w", err))
		return multistep.ActionHalt
	}
	s.created = true
	return multistep.ActionContinue
}

func (s *stepOutputDir) Cleanup(state multistep.StateBag) {
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	_, failed := state.GetOk("error")
	if s.created && (cancelled || halted || failed) {
		os.RemoveAll(s.path)
	}
}

// stepPhase runs one bake phase as a Packer step. On failure the bake's partial outputs are removed, and
// stepOutputDir removes the directory.
type stepPhase struct {
	phase bake.Phase
	spec  *bake.Spec
	st    *bake.State
}

func (s *stepPhase) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	ui := state.Get("ui").(packersdk.Ui)
	ui.Say(fmt.Sprintf("berth-disk: %s", s.phase.Name))
	if err := s.phase.Run(ctx, s.spec, s.st); err != nil {
		err = fmt.Errorf("%s: %w", s.phase.Name, err)
		state.Put("error", err)
		ui.Error(err.Error())
		return multistep.ActionHalt
	}
	return multistep.ActionContinue
}

func (s *stepPhase) Cleanup(state multistep.StateBag) {
	_, cancelled := state.GetOk(multistep.StateCancelled)
	_, halted := state.GetOk(multistep.StateHalted)
	_, failed := state.GetOk("error")
	if s.phase.Name == bake.Phases[0].Name { // once, for the whole bake
		bake.Cleanup(s.spec, s.st, cancelled || halted || failed)
	}
}

// uiWriter sends the bake's log lines to Packer's UI.
type uiWriter struct{ ui packersdk.Ui }

func (w uiWriter) Write(p []byte) (int, error) {
	w.ui.Message(string(p[:len(p)-1]))
	return len(p), nil
}

// Artifact is the baked image's files.
type Artifact struct {
	files    []string
	manifest bake.Manifest
}

func newArtifact(spec *bake.Spec, st *bake.State) *Artifact {
	a := &Artifact{manifest: st.Manifest}
	for _, f := range spec.Formats {
		a.files = append(a.files, st.Outputs[f])
	}
	a.files = append(a.files, filepath.Join(spec.OutputDir, spec.Name+".manifest.json"))
	return a
}

func (a *Artifact) BuilderId() string { return BuilderID }
func (a *Artifact) Files() []string   { return a.files }
func (a *Artifact) Id() string        { return a.manifest.Name }
func (a *Artifact) String() string {
	return fmt.Sprintf("berth node image %s (%s, Kubernetes %s): %v", a.manifest.Name, a.manifest.Distro, a.manifest.KubernetesVersion, a.files)
}
func (a *Artifact) State(name string) interface{} { return nil }
func (a *Artifact) Destroy() error {
	for _, f := range a.files {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
