// Package payload is the one description of what a berth node image contains, used by both the disk builder
// (installed into a root directory) and the provisioner (uploaded over a Packer communicator): the pinned kubelet
// and kube-proxy, berth's systemd units, sysctls and kernel modules for Kubernetes, pre-cached container images,
// and the hygiene script that seals the image.
package payload

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/systemd"
)

// Inputs are the artifacts that go into the image.
type Inputs struct {
	KubeletPath   string   // pinned kubelet binary
	KubeProxyPath string   // pinned kube-proxy binary
	AgentPath     string   // berth-agent binary (static: CGO_ENABLED=0, so it runs on every profile's libc)
	Images        []string // OCI image-layout tarballs to pre-cache (at least the pause image)
	// RuntimeDir holds static containerd, containerd-shim-runc-v2, ctr, runc and cni/<plugin> (tools/build.sh
	// runtime builds them); required for profiles whose runtime is static, unused otherwise.
	RuntimeDir string
}

// StaticRuntime maps the files of Inputs.RuntimeDir to where they go in the image.
var StaticRuntime = []struct{ From, To string }{
	{"containerd", "/usr/local/bin/containerd"},
	{"containerd-shim-runc-v2", "/usr/local/bin/containerd-shim-runc-v2"},
	{"ctr", "/usr/local/bin/ctr"},
	{"runc", "/usr/local/sbin/runc"},
	{"cni/bridge", "/opt/cni/bin/bridge"},
	{"cni/host-local", "/opt/cni/bin/host-local"},
	{"cni/loopback", "/opt/cni/bin/loopback"},
	{"cni/portmap", "/opt/cni/bin/portmap"},
}

// File is one file of the payload: content from Source (a host path), Data, or a symlink to Link.
type File struct {
	Path   string
	Mode   os.FileMode
	Source string
	Data   []byte
	Link   string
}

// Payload is what Build decided to install.
type Payload struct {
	Files []File
	// Packages are installed with dpkg after Files: the agent and its units, as a user installs them by hand.
	Packages []Package
	// ImageDir holds the image tarballs in the image; the builder imports them into containerd's k8s.io namespace
	// at bake time and the agent re-imports any that are missing at boot.
	ImageDir string
	Images   []string // paths under ImageDir
}

// Sysctls are what kubelet, kube-proxy and bridge CNI need, plus the limits busy nodes hit first.
const Sysctls = `# berth: Kubernetes node settings
net.ipv4.ip_forward = 1
net.ipv6.conf.all.forwarding = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
fs.inotify.max_user_watches = 1048576
fs.inotify.max_user_instances = 8192
vm.overcommit_memory = 1
kernel.panic = 10
kernel.panic_on_oops = 1
`

// Modules are loaded at boot (systemd-modules-load) and, by the provisioner, on the machine being baked.
const Modules = "overlay\nbr_netfilter\n"

// ModuleList is Modules, one name each.
func ModuleList() []string { return strings.Fields(Modules) }

// Validate returns every problem with the inputs.
func (in Inputs) Validate() error {
	var errs []error
	for _, f := range []struct{ field, p string }{{"kubelet", in.KubeletPath}, {"kube_proxy", in.KubeProxyPath}, {"agent", in.AgentPath}} {
		field, p := f.field, f.p
		if p == "" {
			errs = append(errs, fmt.Errorf("%s: required", field))
		} else if st, err := os.Stat(p); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		} else if st.Mode()&0o111 == 0 {
			errs = append(errs, fmt.Errorf("%s: %s is not executable", field, p))
		}
	}
	if len(in.Images) == 0 {
		errs = append(errs, errors.New("images: at least the pause image is required (no registry is assumed at boot)"))
	}
	for i, img := range in.Images {
		if _, err := os.Stat(img); err != nil {
			errs = append(errs, fmt.Errorf("images[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// ValidateFor returns every problem with the inputs for profile p.
func (in Inputs) ValidateFor(p distro.Profile) error {
	errs := []error{in.Validate()}
	switch {
	case p.Runtime == distro.RuntimeStatic && in.RuntimeDir == "":
		errs = append(errs, fmt.Errorf("runtime_dir: required for %s, whose archive has no usable containerd (`tools/build.sh runtime` builds one)", p.Name))
	case p.Runtime == distro.RuntimeStatic:
		for _, f := range StaticRuntime {
			if st, err := os.Stat(filepath.Join(in.RuntimeDir, f.From)); err != nil {
				errs = append(errs, fmt.Errorf("runtime_dir: %w", err))
			} else if st.Mode()&0o111 == 0 {
				errs = append(errs, fmt.Errorf("runtime_dir: %s is not executable", f.From))
			}
		}
	}
	return errors.Join(errs...)
}

// Resolve looks up the distro profile and validates the inputs for it, returning every problem at once.
func Resolve(distroName string, in Inputs) (distro.Profile, error) {
	p, err := distro.Get(distroName)
	if err != nil {
		return distro.Profile{}, errors.Join(fmt.Errorf("distro: %w", err), in.Validate())
	}
	return p, in.ValidateFor(p)
}

// Build decides the payload for profile p.
func Build(p distro.Profile, in Inputs) (Payload, error) {
	if err := in.ValidateFor(p); err != nil {
		return Payload{}, err
	}
	pl := Payload{ImageDir: layout.ImageDir}
	pl.Files = append(pl.Files,
		File{Path: "/usr/local/bin/kubelet", Mode: 0o755, Source: in.KubeletPath},
		File{Path: "/usr/local/bin/kube-proxy", Mode: 0o755, Source: in.KubeProxyPath},
		File{Path: "/etc/sysctl.d/90-berth-kubernetes.conf", Mode: 0o644, Data: []byte(Sysctls)},
		File{Path: "/etc/modules-load.d/berth.conf", Mode: 0o644, Data: []byte(Modules)},
		File{Path: layout.ProfileFile, Mode: 0o644, Data: []byte(p.Name + "\n")},
	)
	if p.CNIBinDir != "/opt/cni/bin" {
		// kubelet and most CNI docs expect /opt/cni/bin.
		pl.Files = append(pl.Files, File{Path: "/opt/cni/bin", Link: p.CNIBinDir})
	}
	if p.Runtime == distro.RuntimeStatic {
		for _, f := range StaticRuntime {
			pl.Files = append(pl.Files, File{Path: f.To, Mode: 0o755, Source: filepath.Join(in.RuntimeDir, f.From)})
		}
		for name, data := range systemd.RuntimeUnits() {
			pl.Files = append(pl.Files,
				File{Path: "/etc/systemd/system/" + name, Mode: 0o644, Data: data},
				// Enabled the way `systemctl enable` does it, without running systemctl in the image.
				File{Path: "/etc/systemd/system/multi-user.target.wants/" + name, Link: "/etc/systemd/system/" + name})
		}
	}
	agent, err := AgentPackage(in.AgentPath, DebVersion())
	if err != nil {
		return Payload{}, err
	}
	pl.Packages = append(pl.Packages, agent)
	for _, img := range in.Images {
		dst := filepath.Join(layout.ImageDir, filepath.Base(img))
		pl.Files = append(pl.Files, File{Path: dst, Mode: 0o644, Source: img})
		pl.Images = append(pl.Images, dst)
	}
	sort.Slice(pl.Files, func(i, j int) bool { return pl.Files[i].Path < pl.Files[j].Path })
	return pl, nil
}

// Units are the unit files the payload installs, its packages' included, by name.
func (pl Payload) Units() []string {
	files := pl.Files
	for _, p := range pl.Packages {
		files = append(files[:len(files):len(files)], p.Files...)
	}
	var units []string
	for _, f := range files {
		if dir := filepath.Dir(f.Path); f.Link == "" && (dir == "/etc/systemd/system" || dir == layout.UnitDir) {
			units = append(units, filepath.Base(f.Path))
		}
	}
	sort.Strings(units)
	return units
}

// WriteUnder writes the file into the tree at root, atomically: data (or its Source's content) with its mode, or a
// symlink made under a temporary name and renamed (a directory in its place is removed first).
func (f File) WriteUnder(root string) error {
	dst := filepath.Join(root, f.Path)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if f.Link != "" {
		if fi, err := os.Lstat(dst); err == nil && fi.IsDir() {
			if err := os.RemoveAll(dst); err != nil {
				return err
			}
		}
		tmp := dst + ".berth-tmp"
		os.Remove(tmp)
		if err := os.Symlink(f.Link, tmp); err != nil {
			return fmt.Errorf("install %s: %w", f.Path, err)
		}
		return os.Rename(tmp, dst)
	}
	data := f.Data
	if f.Source != "" {
		var err error
		if data, err = os.ReadFile(f.Source); err != nil {
			return fmt.Errorf("install %s: %w", f.Path, err)
		}
	}
	if err := atomicfile.Write(dst, data, f.Mode); err != nil {
		return fmt.Errorf("install %s: %w", f.Path, err)
	}
	return nil
}

// SealScript is the hygiene run last, in the image (chroot) or over a communicator: no machine identity, no SSH
// host keys, no cloud-init state (the first real boot runs it fresh), no logs or apt lists, no policy-rc.d, and
// nothing of the build machine's network: hostname "localhost" (cloud-init sets the real one) and an empty
// resolv.conf unless it is systemd-resolved's symlink (DHCP or cloud-init's network config fill it; a build
// machine's nameserver would be unreachable on nodes, and every lookup would wait for it to time out).
const SealScript = `set -e
: > /etc/machine-id
echo localhost > /etc/hostname
[ -L /etc/resolv.conf ] || : > /etc/resolv.conf
rm -f /var/lib/dbus/machine-id
ln -s /etc/machine-id /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*
rm -rf /var/lib/cloud/* /var/log/cloud-init*.log
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/tmp/* /root/.bash_history
rm -f /usr/sbin/policy-rc.d
`
