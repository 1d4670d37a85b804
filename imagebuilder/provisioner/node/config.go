//go:generate bash ../../generate.sh

package node

import (
	"errors"

	"github.com/hashicorp/packer-plugin-sdk/common"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
)

// Config is the berth-node provisioner's configuration.
type Config struct {
	common.PackerConfig `mapstructure:",squash"`

	// The target distro profile of the machine being provisioned: `debian-12`, `ubuntu-16.04`, `ubuntu-22.04` or
	// `ubuntu-24.04`. It decides which packages must be present and whether the static runtime is installed.
	Distro string `mapstructure:"distro" required:"true"`
	// Path (on the machine running Packer) of the kubelet binary to install.
	Kubelet string `mapstructure:"kubelet" required:"true"`
	// Path of the kube-proxy binary to install.
	KubeProxy string `mapstructure:"kube_proxy" required:"true"`
	// Path of the berth-agent binary (`make agent` builds it; static, so one binary fits every distro). It is
	// installed as the berth-agent .deb with its units, the package `make deb` writes, through dpkg.
	Agent string `mapstructure:"agent" required:"true"`
	// OCI image-layout tarballs to pre-cache in containerd's `k8s.io` namespace. Must include the pause image.
	Images []string `mapstructure:"images" required:"true"`
	// Directory of static containerd, runc and CNI binaries, required for the Ubuntu profiles (see berth-disk).
	RuntimeDir string `mapstructure:"runtime_dir"`
	// Install the profile's packages that are missing with apt-get (needs the machine's archive). Default true;
	// packages that are already installed are never touched.
	InstallPackages *bool `mapstructure:"install_packages"`
	// Seal the machine at the end (empty machine-id, no SSH host keys, no cloud-init state, logs truncated).
	// Default true; the communicator's SSH session keeps working until the machine shuts down.
	Seal *bool `mapstructure:"seal"`
	// Directory on the machine where files are staged before installation. Default `/tmp/berth-payload`.
	StagingDir string `mapstructure:"staging_dir"`

	profile distro.Profile
	ctx     interpolate.Context
}

// Prepare decodes raws into c, sets defaults and returns every problem at once, each naming its field.
func (c *Config) Prepare(raws ...interface{}) error {
	if err := config.Decode(c, &config.DecodeOpts{PluginType: "berth-node", Interpolate: true, InterpolateContext: &c.ctx}, raws...); err != nil {
		return err
	}
	var errs []error
	var err error
	// Names the fields it checks: distro, kubelet, kube_proxy, agent, images[i], runtime_dir.
	if c.profile, err = payload.Resolve(c.Distro, c.inputs()); err != nil {
		errs = append(errs, err)
	}
	t := true
	if c.InstallPackages == nil {
		c.InstallPackages = &t
	}
	if c.Seal == nil {
		c.Seal = &t
	}
	if c.StagingDir == "" {
		c.StagingDir = "/tmp/berth-payload"
	}
	return errors.Join(errs...)
}

func (c *Config) inputs() payload.Inputs {
	return payload.Inputs{KubeletPath: c.Kubelet, KubeProxyPath: c.KubeProxy, AgentPath: c.Agent, Images: c.Images, RuntimeDir: c.RuntimeDir}
}
