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
)

// The whole bake of a Debian 12 node image, for real: mmdebstrap rootfs (cached across runs), payload with the
// pinned kubelet and kube-proxy and pre-cached images, sealing, offline disk assembly, qcow2 + fixed VHD, and a
// boot under qemu whose in-guest checks must all pass. Then what that boot reported, judged against a wrong
// expectation, must fail the check: a boot check that cannot fail would be worthless. (What a first boot of the
// image shows over SSH, its fresh machine-id and host keys, is checked by the e2e join, which boots this image.)
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

	// What this boot reported, judged against another Kubernetes version: the check must fail and name what
	// failed. (The versions are judged on the host from what the guest reported, so no second boot is needed;
	// the bake's versions phase refuses such a mismatch before baking, so a real bake never gets this far.)
	var failed []string
	for _, c := range st.BootCheck.Judge(bootcheck.Expect{KubernetesVersion: "v1.99.0", SandboxImage: images.Pause, Images: st.Images}) {
		if !c.OK {
			failed = append(failed, c.Name)
		}
	}
	if strings.Join(failed, ",") != "kubelet-version,kube-proxy-version" {
		t.Errorf("with a wrong version expected, failed checks = %v; want kubelet-version and kube-proxy-version only", failed)
	}
}
