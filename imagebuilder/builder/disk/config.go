//go:generate bash ../../generate.sh

package disk

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
)

// Config is the berth-disk builder's configuration.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// The target distro profile: `debian-12`, `ubuntu-16.04`, `ubuntu-22.04` or `ubuntu-24.04`. Only debian-12's
	// archive is reachable from berth's CI; the others build wherever `mirror` points at an Ubuntu archive.
	Distro string `mapstructure:"distro" required:"true"`
	// Replaces the profile's main archive URL (for example a local mirror). Default: the profile's.
	Mirror string `mapstructure:"mirror"`
	// Path of the kubelet binary to install (the pinned version; it must print `Kubernetes <kubernetes_version>`).
	Kubelet string `mapstructure:"kubelet" required:"true"`
	// Path of the kube-proxy binary to install.
	KubeProxy string `mapstructure:"kube_proxy" required:"true"`
	// Path of the berth-agent binary (`make agent` builds it; static, so one binary fits every distro). It is
	// installed as the berth-agent .deb with its units, the package `make deb` writes, through dpkg.
	Agent string `mapstructure:"agent" required:"true"`
	// The version kubelet and kube-proxy must report, checked when the image boots, e.g. `v1.37.2`.
	KubernetesVersion string `mapstructure:"kubernetes_version" required:"true"`
	// OCI image-layout tarballs to pre-cache in containerd's `k8s.io` namespace. Must include the pause image.
	Images []string `mapstructure:"images" required:"true"`
	// The pause image's reference, which must be one of the pre-cached images, e.g. `berth.dev/pause:3.10`.
	SandboxImage string `mapstructure:"sandbox_image" required:"true"`
	// Directory of static containerd, containerd-shim-runc-v2, ctr, runc and cni/<plugin> binaries, required for
	// distros whose archive has no usable containerd (the Ubuntu profiles). `tools/build.sh runtime` builds them.
	RuntimeDir string `mapstructure:"runtime_dir"`
	// Output formats, any of `raw`, `qcow2`, `vhd` (fixed VHD for Azure). Default `["qcow2"]`.
	Formats []string `mapstructure:"formats"`
	// Compress the qcow2 output (smaller, about 15 s slower per GiB).
	CompressQCOW2 bool `mapstructure:"compress_qcow2"`
	// Disk size in MiB. Default 4096.
	DiskSizeMiB int `mapstructure:"disk_size_mib"`
	// UUID of the root filesystem. Default: derived from the build name, so rebuilds keep it.
	RootUUID string `mapstructure:"root_uuid"`
	// Directory for the outputs. Default `output-<build name>`. It must not exist unless `-force` is given.
	OutputDir string `mapstructure:"output_dir"`
	// Base name of the output files. Default `node`.
	ImageName string `mapstructure:"image_name"`
	// Directory for the rootfs cache (keyed by the package set). Default `$BERTH_CACHE`, else `$HOME/.cache/berth`.
	CacheDir string `mapstructure:"cache_dir"`
	// A cached rootfs older than this is rebuilt from the archive, so images pick up its security updates.
	// Default `168h` (a week); `0` keeps a cached rootfs forever.
	RootfsMaxAge string `mapstructure:"rootfs_max_age"`
	// Boot the image under qemu and fail the build unless every check passes. Default true.
	BootCheck *bool `mapstructure:"boot_check"`
	// How long the boot check may take. Default `6m` (qemu runs without KVM on many CI machines).
	BootTimeout string `mapstructure:"boot_timeout"`

	bootTimeout  time.Duration
	rootfsMaxAge time.Duration
	profile      distro.Profile
	ctx          interpolate.Context
}

// Prepare decodes raws into c, sets defaults and returns every problem at once, each naming its field.
func (c *Config) Prepare(raws ...interface{}) ([]string, error) {
	if err := config.Decode(c, &config.DecodeOpts{PluginType: BuilderID, Interpolate: true, InterpolateContext: &c.ctx}, raws...); err != nil {
		return nil, err
	}
	var errs []error
	var warnings []string
	var err error
	// Names the fields it checks: distro, kubelet, kube_proxy, agent, images[i], runtime_dir.
	if c.profile, err = payload.Resolve(c.Distro, c.inputs()); err != nil {
		errs = append(errs, err)
	}
	if c.profile.Name != "" && !c.profile.BuiltHere && c.Mirror == "" {
		warnings = append(warnings, fmt.Sprintf("distro %s: its default archive is not reachable from berth's CI; set mirror if yours cannot reach it either", c.Distro))
	}
	for field, v := range map[string]string{"kubernetes_version": c.KubernetesVersion, "sandbox_image": c.SandboxImage} {
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: required", field))
		}
	}
	if len(c.Formats) == 0 {
		c.Formats = []string{"qcow2"}
	}
	seen := map[string]bool{}
	for i, f := range c.Formats {
		switch f {
		case "raw", "qcow2", "vhd":
		default:
			errs = append(errs, fmt.Errorf("formats[%d]: %q: want raw, qcow2 or vhd", i, f))
		}
		if seen[f] {
			errs = append(errs, fmt.Errorf("formats[%d]: %q listed twice", i, f))
		}
		seen[f] = true
	}
	if c.DiskSizeMiB == 0 {
		c.DiskSizeMiB = 4096
	}
	if c.DiskSizeMiB < 1024 {
		errs = append(errs, fmt.Errorf("disk_size_mib: %d is too small (at least 1024)", c.DiskSizeMiB))
	}
	if c.ImageName == "" {
		c.ImageName = "node"
	}
	if c.OutputDir == "" {
		c.OutputDir = "output-" + c.PackerBuildName
	}
	if c.RootUUID == "" {
		sum := sha256.Sum256([]byte("berth-root:" + c.PackerBuildName + ":" + c.ImageName))
		sum[6] = sum[6]&0x0f | 0x40 // version 4 layout, deterministic content
		sum[8] = sum[8]&0x3f | 0x80
		c.RootUUID = fmt.Sprintf("%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	}
	if c.CacheDir == "" {
		c.CacheDir = bake.DefaultCacheDir()
	}
	if c.BootCheck == nil {
		t := true
		c.BootCheck = &t
	}
	if c.BootTimeout == "" {
		c.BootTimeout = "6m"
	}
	if c.bootTimeout, err = time.ParseDuration(c.BootTimeout); err != nil {
		errs = append(errs, fmt.Errorf("boot_timeout: %w", err))
	}
	if c.RootfsMaxAge == "" {
		c.RootfsMaxAge = "168h"
	}
	if c.rootfsMaxAge, err = time.ParseDuration(c.RootfsMaxAge); err != nil || c.rootfsMaxAge < 0 {
		errs = append(errs, fmt.Errorf("rootfs_max_age: %q is not a duration of 0 or more (e.g. 168h)", c.RootfsMaxAge))
	}
	if _, err := os.Stat(c.OutputDir); err == nil && !c.PackerForce {
		errs = append(errs, fmt.Errorf("output_dir: %s already exists (use -force to replace it)", c.OutputDir))
	}
	return warnings, errors.Join(errs...)
}

func (c *Config) inputs() payload.Inputs {
	return payload.Inputs{KubeletPath: c.Kubelet, KubeProxyPath: c.KubeProxy, AgentPath: c.Agent, Images: c.Images, RuntimeDir: c.RuntimeDir}
}
