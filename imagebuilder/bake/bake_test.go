package bake_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/bootcheck"
	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/nodeimage"
	"berth.dev/berth/test/vm"
)

// The whole bake of a Debian 12 node image, for real: mmdebstrap rootfs (cached across runs), payload with the
// pinned kubelet and kube-proxy and pre-cached images, sealing, offline disk assembly, qcow2 + fixed VHD, and a
// boot under qemu whose in-guest checks must all pass. Then the same image booted with a wrong expectation must
// fail the check: a boot check that cannot fail would be worthless.
func TestBakeDebian12(t *testing.T) {
	s := nodeimage.Spec(t, nodeimage.Inputs(t))
	s.Formats = []disk.Format{disk.QCOW2, disk.VHD}
	s.BootCheck = true
	s.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	out := s.OutputDir
	ctx := context.Background()
	st, err := bake.RunAll(ctx, s)
	if st.BootCheck != nil {
		for _, c := range st.BootCheck.Checks {
			t.Logf("boot check %-28s ok=%v %s", c.Name, c.OK, c.Detail)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tm := range st.Timings {
		t.Logf("phase %-10s %v", tm.Phase, tm.Took.Round(time.Millisecond))
	}

	m := st.Manifest
	if m.Packages["containerd"] == "" || m.Packages["runc"] == "" || m.Packages["cloud-init"] == "" {
		t.Errorf("manifest lacks runtime packages: containerd=%q runc=%q cloud-init=%q", m.Packages["containerd"], m.Packages["runc"], m.Packages["cloud-init"])
	}
	for _, b := range []string{"/usr/local/bin/kubelet", "/usr/local/bin/kube-proxy", "/usr/bin/containerd", "/usr/sbin/runc"} {
		if len(m.Binaries[b]) != 64 {
			t.Errorf("manifest has no sha256 for %s", b)
		}
	}
	vhd := st.Outputs[disk.VHD]
	fi, err := os.Stat(vhd)
	if err != nil {
		t.Fatal(err)
	}
	// A fixed VHD is the disk plus a 512-byte footer; Azure wants the virtual size in whole MiB.
	if (fi.Size()-512)%(1<<20) != 0 || fi.Size()-512 != int64(s.Layout.SizeMiB)<<20 {
		t.Errorf("VHD size %d: want %d MiB + 512-byte footer", fi.Size(), s.Layout.SizeMiB)
	}
	if _, err := os.Stat(filepath.Join(out, "node.raw")); !os.IsNotExist(err) {
		t.Error("the intermediate raw disk was left although raw was not asked for")
	}
	if _, err := os.Stat(filepath.Join(out, "node.manifest.json")); err != nil {
		t.Error(err)
	}

	// Independently of the build's own check: boot the qcow2 as a test guest and look inside over SSH.
	g := vm.Boot(t, vm.Config{Name: "baked", Image: st.Outputs[disk.QCOW2], Format: "qcow2"})
	if got := strings.TrimSpace(g.Run("systemctl is-system-running --wait || true")); got != "running" {
		t.Errorf("systemd state = %q, want running (failed units: %s)", got, g.Run("systemctl --failed --no-legend || true"))
	}
	if got := g.Run("cloud-init status --wait || true"); !strings.Contains(got, "status: done") {
		t.Errorf("cloud-init: %s", got)
	}
	if got := strings.TrimSpace(g.Run("ctr -n k8s.io run --rm --runtime io.containerd.runc.v2 " + images.Busybox + " t1 echo hello-from-a-baked-image")); got != "hello-from-a-baked-image" {
		t.Errorf("container from a pre-cached image printed %q", got)
	}
	if got := strings.TrimSpace(g.Run("/usr/local/bin/kubelet --version")); got != "Kubernetes v1.37.2" {
		t.Errorf("kubelet --version = %q", got)
	}
	if got := strings.TrimSpace(g.Run("cat /etc/machine-id")); len(got) != 32 {
		t.Errorf("machine-id after first boot = %q, want a fresh 32-hex id", got)
	}
	if got := g.Run("ls /etc/ssh/"); !strings.Contains(got, "ssh_host_ed25519_key") {
		t.Errorf("first boot did not generate SSH host keys: %s", got)
	}
	if got := strings.TrimSpace(g.Run("systemctl is-enabled kubelet.service || true")); got != "disabled" {
		t.Errorf("kubelet.service is %q, want installed but disabled (the agent starts it)", got)
	}

	// The same image, expecting another Kubernetes version: the check must fail and name what failed.
	res, err := bootcheck.Run(ctx, st.Outputs[disk.QCOW2], "qcow2", t.TempDir(), bootcheck.Expect{
		KubernetesVersion: "v1.99.0", SandboxImage: images.Pause, Images: st.Images}, 6*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, c := range res.Failed() {
		failed = append(failed, c.Name)
	}
	if strings.Join(failed, ",") != "kubelet-version,kube-proxy-version" {
		t.Errorf("with a wrong version expected, failed checks = %v; want kubelet-version and kube-proxy-version only", failed)
	}
}
