package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"berth.dev/berth/agent/shares/mounter"
	"berth.dev/berth/agent/shares/mountopts"
	"berth.dev/berth/agent/shares/node"
	"berth.dev/berth/test/nspawn"
)

// fakeCIFS stands in for mount.cifs in the container (this host's kernel has no CIFS client; the real one is
// tested in guests): it mounts a tmpfs named as the share (so the mount's source reads //server/share, as a cifs
// mount's does) holding a copy of /srv/exports/<share>, and records, at mount time, the credentials file's mode
// and content and the options it was given.
const fakeCIFS = `#!/bin/sh
# mount.cifs //server/share DIR -o OPTIONS
share=${1##*/}; dir=$2; opts=$4
cred=$(echo "$opts" | tr ',' '\n' | sed -n 's/^credentials=//p')
{ echo "options $opts"; [ -n "$cred" ] && echo "credentials $(stat -c %a "$cred") $(tr '\n' ' ' < "$cred")"; } >> /run/fake-cifs.log
mount -t tmpfs "$1" "$dir" && cp -a "/srv/exports/$share/." "$dir/"
`

// nsBinds makes the Node service's binds inside the container.
type nsBinds struct{ m *nspawn.Machine }

func (b nsBinds) Bind(ctx context.Context, src, dst string, ro bool) error {
	script := fmt.Sprintf("mount --bind %q %q", src, dst)
	if ro {
		script += fmt.Sprintf(" && mount -o remount,bind,ro %q", dst)
	}
	_, err := b.m.Sh(ctx, script)
	return err
}
func (b nsBinds) Unbind(ctx context.Context, dst string) error {
	_, err := b.m.Sh(ctx, fmt.Sprintf("umount %q", dst))
	return err
}
func (b nsBinds) Detach(ctx context.Context, dst string) error {
	_, err := b.m.Sh(ctx, fmt.Sprintf("umount -l %q 2>/dev/null || ! mountpoint -q %q", dst, dst))
	return err
}
func (b nsBinds) IsMounted(dst string) (bool, error) {
	out, err := b.m.Sh(context.Background(), fmt.Sprintf("mountpoint -q %q && echo yes || echo no", dst))
	return strings.TrimSpace(out) == "yes", err
}

// The SMB Node service against a real systemd (nspawn): the share is a systemd mount unit made with the
// credentials file in place (0600) and gone after; two volumes of the share share it; a pod's read-only publish;
// a restarted service carries on; the share is unmounted with its last volume and leaves no unit.
func TestNodeServiceInNspawn(t *testing.T) {
	nspawn.WarmRootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m, mgr := nspawn.ForTest(t, ctx, nspawn.Config{Name: "berth-shares", Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Prepare: func(root string) error {
			if err := os.WriteFile(filepath.Join(root, "sbin", "mount.cifs"), []byte(fakeCIFS), 0o755); err != nil {
				return err
			}
			return os.MkdirAll(filepath.Join(root, "srv", "exports", "data", "pvc-a"), 0o755)
		}})
	sh := func(script string) string { t.Helper(); return nspawn.Run(t, ctx, m, script) }
	root, err := m.NSRoot() // the service's own files, as the container sees them (its /run, its mounts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.Config{Protocol: mountopts.SMB, NodeID: "n", StateDir: "/var/lib/berth/shares/smb", CredDir: "/run/berth/shares", Root: root}
	mt := mounter.Mounter{Units: mgr}
	srv := node.New(cfg, mt, nsBinds{m})
	capability := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{VolumeMountGroup: "2000"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}
	stage := func(id, subDir string) *csi.NodeStageVolumeRequest {
		return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: "/var/lib/kubelet/plugins/kubernetes.io/csi/smb/" + id + "/globalmount",
			VolumeContext: map[string]string{"source": "//files/data", "subDir": subDir}, VolumeCapability: capability,
			Secrets: map[string]string{"username": "alice", "password": "s3cret word"}}
	}
	a, whole := stage("vol-a", "pvc-a"), stage("vol-whole", "")
	for range 2 {
		for _, req := range []*csi.NodeStageVolumeRequest{a, whole} {
			if _, err := srv.NodeStageVolume(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := sh("cat /run/fake-cifs.log"); !strings.Contains(got, "credentials 600 username=alice password=s3cret word") ||
		!strings.Contains(got, "vers=3.0,dir_mode=0777,file_mode=0777,mfsymlinks,cache=strict,actimeo=30,nosharesock,gid=2000,credentials=/run/berth/shares/") {
		t.Errorf("what mount.cifs got:\n%s", got)
	}
	if got := sh("ls -A /run/berth/shares; systemctl list-units --no-legend --type mount 'var-lib-berth-shares-*' | wc -l"); got != "1" {
		t.Errorf("credentials files left, and share mount units (want none and 1):\n%s", got)
	}
	if got := sh("systemctl show -p Options --value 'var-lib-berth-shares-*.mount'"); strings.Contains(got, "s3cret") {
		t.Errorf("the unit holds the password: %s", got)
	}
	sh("echo hello > " + a.StagingTargetPath + "/f")
	pub := &csi.NodePublishVolumeRequest{VolumeId: "vol-a", StagingTargetPath: a.StagingTargetPath, TargetPath: "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/vol-a/mount",
		VolumeCapability: capability, Readonly: true}
	if _, err := srv.NodePublishVolume(ctx, pub); err != nil {
		t.Fatal(err)
	}
	if got := sh("cat " + pub.TargetPath + "/f; touch " + pub.TargetPath + "/g 2>&1 || true"); !strings.HasPrefix(got, "hello") || !strings.Contains(got, "Read-only") {
		t.Errorf("the pod's view: %q, want the share's file and read-only", got)
	}

	// Heal: the share's mount detached under systemd, mounted again (a second mount.cifs with the credentials file),
	// its unit active again, the volume's staging path bound to the new mount; the pod's bind is left alone.
	shares, err := srv.Shares()
	if err != nil || len(shares) != 1 {
		t.Fatalf("shares %v, %v", shares, err)
	}
	sh("echo from-server > /srv/exports/data/pvc-a/after")
	if err := srv.Heal(ctx, shares[0].Key); err != nil {
		t.Fatal(err)
	}
	if got := sh("grep -c '^credentials 600 username=alice' /run/fake-cifs.log; ls -A /run/berth/shares | wc -l; systemctl is-active 'var-lib-berth-shares-*.mount'; cat " + a.StagingTargetPath + "/after; cat " + pub.TargetPath + "/f"); got != "2\n0\nactive\nfrom-server\nhello" {
		t.Errorf("after heal (mounts made with credentials, files left, the unit, the staging path's view, the pod's):\n%s", got)
	}

	srv = node.New(cfg, mt, nsBinds{m}) // the agent restarted
	if _, err := srv.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-a", TargetPath: pub.TargetPath}); err != nil {
		t.Fatal(err)
	}
	for _, req := range []*csi.NodeStageVolumeRequest{a, whole} {
		if _, err := srv.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: req.VolumeId, StagingTargetPath: req.StagingTargetPath}); err != nil {
			t.Fatal(err)
		}
	}
	if got := sh("findmnt -n -o TARGET | grep -c -e /var/lib/berth -e /var/lib/kubelet || true; systemctl list-units --all --no-legend 'var-lib-berth-shares-*' | wc -l; test -e " + pub.TargetPath + " && echo target-left || echo target-gone"); got != "0\n0\ntarget-gone" {
		t.Errorf("after unpublish and unstage (mounts, units, the pod's path):\n%s", got)
	}
}
