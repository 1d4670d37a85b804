package packer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/internal/node/layout"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/nodeimage"
)

// bareImage bakes a Debian 12 image with the profile's packages but without berth's payload (the bake's phases
// minus install), as a stand-in for a cloud's stock image, and returns it as qcow2.
func bareImage(t *testing.T) string {
	s := nodeimage.Spec(t, payload.Inputs{})
	s.Name, s.Log = "bare", slog.New(slog.DiscardHandler)
	st := &bake.State{}
	ctx := context.Background()
	defer bake.Cleanup(s, st, false)
	for _, phase := range []func(context.Context, *bake.Spec, *bake.State) error{bake.Rootfs, bake.Extract, bake.Seal, bake.Disk, bake.Convert} {
		if err := phase(ctx, s, st); err != nil {
			t.Fatal(err)
		}
	}
	return st.Outputs[disk.QCOW2]
}

// The berth-node provisioner, for real: Packer's qemu builder boots a bare Debian 12 image and the provisioner
// installs berth's payload over SSH; the result is then read offline.
func TestPackerProvisionerInstallsPayload(t *testing.T) {
	e := newEnv(t)
	base := bareImage(t)
	key := filepath.Join(e.dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	seed := filepath.Join(e.dir, "seed")
	os.MkdirAll(seed, 0o755)
	os.WriteFile(filepath.Join(seed, "user-data"), []byte(fmt.Sprintf("#cloud-config\nlocale: C.UTF-8\ndisable_root: false\nusers:\n  - name: root\n    ssh_authorized_keys: [%q]\n", strings.TrimSpace(string(pub)))), 0o600)
	os.WriteFile(filepath.Join(seed, "meta-data"), []byte("instance-id: provision-test\nlocal-hostname: provision\n"), 0o644)
	out := filepath.Join(e.dir, "out")
	tmpl := fmt.Sprintf(`
variable "kubernetes_bin_dir" { type = string }
variable "agent" { type = string }
variable "images" { type = list(string) }

source "qemu" "bare" {
  accelerator          = "tcg"
  disk_image           = true
  iso_url              = %q
  iso_checksum         = "none"
  use_backing_file     = true
  format               = "qcow2"
  disk_size            = "3072M"
  disk_interface       = "virtio"
  headless             = true
  memory               = 2048
  cpus                 = 2
  cd_files             = [%q, %q]
  cd_label             = "cidata"
  communicator         = "ssh"
  ssh_username         = "root"
  ssh_private_key_file = %q
  ssh_timeout          = "10m"
  shutdown_command     = "shutdown -P now"
  output_directory     = %q
  vm_name              = "node.qcow2"
  # User networking that reaches nothing outside the guest but the SSH forward.
  qemuargs = [["-netdev", "user,id=user.0,restrict=on,hostfwd=tcp::{{ .SSHHostPort }}-:22"], ["-device", "virtio-net,netdev=user.0"]]
}

build {
  sources = ["source.qemu.bare"]
  provisioner "berth-node" {
    distro     = "debian-12"
    kubelet    = "${var.kubernetes_bin_dir}/kubelet"
    kube_proxy = "${var.kubernetes_bin_dir}/kube-proxy"
    agent      = var.agent
    images     = var.images
  }
}
`, base, filepath.Join(seed, "user-data"), filepath.Join(seed, "meta-data"), key, out)
	path := filepath.Join(e.dir, "provision.pkr.hcl")
	if err := os.WriteFile(path, []byte(tmpl), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := e.run(t, append([]string{"build"}, append(e.vars, path)...)...)
	if err != nil {
		t.Fatalf("packer build: %v\n%s", err, log)
	}
	for _, want := range []string{"berth-node: installing missing packages", "payload files", "installing berth-agent_",
		"applying sysctls and modules, starting containerd", "berth-node: importing 3 images", "berth-node: sealing"} {
		if !strings.Contains(log, want) {
			t.Errorf("build log lacks %q:\n%s", want, log)
		}
	}

	raw := filepath.Join(e.dir, "node.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", filepath.Join(out, "node.qcow2"), raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	fs := raw + "?offset=1048576"
	debugfs := func(cmd string) string {
		out, err := exec.Command("debugfs", "-R", cmd, fs).Output()
		if err != nil {
			t.Fatalf("debugfs %s: %v", cmd, err)
		}
		return string(out)
	}
	if got := debugfs("stat /usr/local/bin/kubelet"); !strings.Contains(got, "Mode:  0755") {
		t.Errorf("kubelet not installed 0755:\n%s", got)
	}
	if got := debugfs("stat /usr/bin/berth-agent"); !strings.Contains(got, "Mode:  0755") {
		t.Errorf("berth-agent not installed 0755:\n%s", got)
	}
	if got := debugfs("stat /etc/systemd/system/multi-user.target.wants/berth-agent.service"); !strings.Contains(got, "Type: symlink") {
		t.Errorf("berth-agent.service not enabled:\n%s", got)
	}
	if got := debugfs("cat /var/lib/dpkg/status"); !strings.Contains(got, "Package: berth-agent\nStatus: install ok installed\n") {
		t.Error("dpkg does not list berth-agent as installed")
	}
	// policy-rc.d kept the package from starting the agent on the machine being baked: it never created its
	// config directory.
	if got := debugfs("ls /etc/berth"); strings.Contains(got, "config.d") {
		t.Errorf("the agent ran during provisioning (/etc/berth: %s)", got)
	}
	if got := debugfs("cat /etc/sysctl.d/90-berth-kubernetes.conf"); !strings.Contains(got, "net.ipv4.ip_forward = 1") {
		t.Errorf("sysctls not installed: %q", got)
	}
	// The images given: pause, busybox and the log shipper's.
	if got := debugfs("cat /var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db"); !strings.Contains(got, images.Pause) || !strings.Contains(got, images.Busybox) || !strings.Contains(got, layout.LogsImage) {
		t.Error("the images were not imported into containerd's store")
	}
	if got := debugfs("cat /etc/machine-id"); got != "" {
		t.Errorf("machine-id = %q after sealing, want empty", got)
	}
	if got := debugfs("ls -l /etc/ssh"); strings.Contains(got, "ssh_host_") {
		t.Errorf("SSH host keys left after sealing:\n%s", got)
	}
}
