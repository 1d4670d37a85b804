package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"berth.dev/berth/agent/shares/mounter"
	"berth.dev/berth/agent/shares/mountopts"
)

// fakeMounts records share mounts, and what the credentials file held while each was made (unit tests of the
// logic; the mounts themselves are tested with systemd in agent/shares/mounter and in guests).
type fakeMounts struct {
	root    string
	mounted map[string]mounter.Mount
	creds   []string // "<mode> <content>" of the credentials file at each mount
	calls   int
}

func (f *fakeMounts) Mount(_ context.Context, m mounter.Mount) error {
	f.calls++
	for _, o := range m.Options {
		if file, ok := strings.CutPrefix(o, "credentials="); ok {
			fi, err := os.Stat(filepath.Join(f.root, file))
			if err != nil {
				return err
			}
			data, _ := os.ReadFile(filepath.Join(f.root, file))
			f.creds = append(f.creds, fi.Mode().Perm().String()+" "+string(data))
		}
	}
	if old, ok := f.mounted[m.Where]; ok && old.What == m.What {
		return nil
	}
	f.mounted[m.Where] = m
	return os.MkdirAll(filepath.Join(f.root, m.Where, "pvc-a"), 0o755) // the share holds one directory
}

func (f *fakeMounts) Forget(_ context.Context, where string) error {
	delete(f.mounted, where) // the detached mount is gone
	return nil
}

func (f *fakeMounts) Unmount(_ context.Context, where string) error {
	delete(f.mounted, where)
	return os.RemoveAll(filepath.Join(f.root, where, "pvc-a"))
}

type fakeBinds struct {
	binds    map[string]string // dst → src (+",ro")
	detached []string
}

func (f *fakeBinds) Bind(_ context.Context, src, dst string, ro bool) error {
	if ro {
		src += ",ro"
	}
	f.binds[dst] = src
	return nil
}
func (f *fakeBinds) Unbind(_ context.Context, dst string) error { delete(f.binds, dst); return nil }
func (f *fakeBinds) IsMounted(dst string) (bool, error)         { _, ok := f.binds[dst]; return ok, nil }
func (f *fakeBinds) Detach(_ context.Context, dst string) error {
	f.detached = append(f.detached, dst)
	delete(f.binds, dst)
	return nil
}

func newServer(t *testing.T) (*Server, *fakeMounts, *fakeBinds) {
	root := t.TempDir()
	m, b := &fakeMounts{root: root, mounted: map[string]mounter.Mount{}}, &fakeBinds{binds: map[string]string{}}
	return New(Config{Protocol: mountopts.SMB, NodeID: "node-1", StateDir: "/var/lib/berth/shares", CredDir: "/run/berth/shares", Root: root}, m, b), m, b
}

func stageReq(id, staging string, ctx, secrets map[string]string, flags ...string) *csi.NodeStageVolumeRequest {
	return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeContext: ctx, Secrets: secrets,
		VolumeCapability: &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags, VolumeMountGroup: "2000"}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}}
}

// Two volumes of one share with the same options and credentials share one mount; the credentials file is 0600
// while the mount is made and gone after; each volume's directory is bound to its staging path; publishing binds
// the staging path (read-only when asked); every call again changes nothing; the share is unmounted with its last
// volume, and the state survives a new Server (an agent restart).
func TestStageShareOnceAndRelease(t *testing.T) {
	s, m, b := newServer(t)
	ctx := context.Background()
	secret := map[string]string{"username": "alice", "password": "hunter2"}
	a := stageReq("vol-a", "/var/lib/kubelet/plugins/x/a/globalmount", map[string]string{"source": "//10.88.0.1/data", "subDir": "pvc-a"}, secret)
	whole := stageReq("vol-whole", "/var/lib/kubelet/plugins/x/w/globalmount", map[string]string{"source": "//10.88.0.1/data"}, secret)
	for range 2 {
		for _, req := range []*csi.NodeStageVolumeRequest{a, whole} {
			if _, err := s.NodeStageVolume(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(m.mounted) != 1 {
		t.Fatalf("share mounts: %v, want one for both volumes", m.mounted)
	}
	var share mounter.Mount
	for _, mt := range m.mounted {
		share = mt
	}
	if share.What != "//10.88.0.1/data" || share.Type != "cifs" || !strings.Contains(strings.Join(share.Options, ","), "vers=3.0,dir_mode=0777") ||
		!strings.Contains(strings.Join(share.Options, ","), "gid=2000,credentials=/run/berth/shares/") {
		t.Errorf("share mount %+v", share)
	}
	for _, c := range m.creds {
		if c != "-rw------- username=alice\npassword=hunter2\n" {
			t.Errorf("credentials file at mount time: %q", c)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(s.cfg.Root, "/run/berth/shares")); len(left) != 0 {
		t.Errorf("credentials files left after the mounts: %v", left)
	}
	if got := b.binds[a.StagingTargetPath]; got != filepath.Join(share.Where, "pvc-a") {
		t.Errorf("vol-a staged from %q", got)
	}
	if got := b.binds[whole.StagingTargetPath]; got != share.Where {
		t.Errorf("vol-whole staged from %q", got)
	}

	pub := &csi.NodePublishVolumeRequest{VolumeId: "vol-a", StagingTargetPath: a.StagingTargetPath, TargetPath: "/var/lib/kubelet/pods/p/volumes/v/mount",
		VolumeCapability: a.VolumeCapability, Readonly: true}
	for range 2 {
		if _, err := s.NodePublishVolume(ctx, pub); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.binds[pub.TargetPath]; got != a.StagingTargetPath+",ro" {
		t.Errorf("published from %q, want the staging path read-only", got)
	}
	s2 := New(s.cfg, m, b) // the agent restarted
	for range 2 {
		if _, err := s2.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-a", TargetPath: pub.TargetPath}); err != nil {
			t.Fatal(err)
		}
		if _, err := s2.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "vol-a", StagingTargetPath: a.StagingTargetPath}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.cfg.Root, pub.TargetPath)); !os.IsNotExist(err) {
		t.Errorf("the pod's path is left: %v", err)
	}
	if len(m.mounted) != 1 {
		t.Errorf("the share was unmounted while vol-whole uses it")
	}
	if _, err := s2.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "vol-whole", StagingTargetPath: whole.StagingTargetPath}); err != nil {
		t.Fatal(err)
	}
	if len(m.mounted) != 0 || len(b.binds) != 0 {
		t.Errorf("after the last unstage: shares %v, binds %v", m.mounted, b.binds)
	}
}

// Another password (a rotated Secret) is another share mount: new stages use it while the old one stays.
func TestRotatedSecretMountsAnew(t *testing.T) {
	s, m, _ := newServer(t)
	ctx := context.Background()
	src := map[string]string{"source": "//10.88.0.1/data"}
	if _, err := s.NodeStageVolume(ctx, stageReq("v1", "/stage/1", src, map[string]string{"username": "alice", "password": "old"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodeStageVolume(ctx, stageReq("v2", "/stage/2", src, map[string]string{"username": "alice", "password": "new"})); err != nil {
		t.Fatal(err)
	}
	if len(m.mounted) != 2 {
		t.Errorf("share mounts %d, want 2 (one per password)", len(m.mounted))
	}
}

func TestStageRefusesBadInput(t *testing.T) {
	s, m, _ := newServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		req  *csi.NodeStageVolumeRequest
		code codes.Code
		want []string
	}{
		{"no source, conflicting options, a password in the options",
			stageReq("v", "/stage/v", map[string]string{"server": "x"}, nil), codes.InvalidArgument, []string{"source: required", "server: unknown key"}},
		{"conflicting options", stageReq("v", "/stage/v", map[string]string{"source": "//s/d"}, nil, "hard", "soft", "password=hunter2"), codes.InvalidArgument,
			[]string{`"soft" conflicts with mountOptions[0]: "hard"`, `option "password": a credential does not belong`}},
		{"a Secret without a username", stageReq("v", "/stage/v", map[string]string{"source": "//s/d"}, map[string]string{"password": "hunter2"}), codes.InvalidArgument,
			[]string{`the Secret has no "username" key`}},
		{"a bad server name", stageReq("v", "/stage/v", map[string]string{"source": "//no_such host/d"}, nil), codes.InvalidArgument,
			[]string{"is not a host name or an IP address"}},
		{"a missing subDir", stageReq("v", "/stage/v", map[string]string{"source": "//s/d", "subDir": "gone"}, nil), codes.NotFound,
			[]string{`subDir "gone": not a directory on //s/d`}},
		{"an NFS share given to the SMB driver", stageReq("v", "/stage/v", map[string]string{"source": "nfs:/export"}, nil), codes.InvalidArgument,
			[]string{`"nfs:/export" is an nfs share; this driver mounts smb shares`}},
		{"a relative staging path", stageReq("v", "stage", map[string]string{"source": "//s/d"}, nil), codes.InvalidArgument,
			[]string{"staging_target_path"}},
	} {
		_, err := s.NodeStageVolume(ctx, tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q: %v", tc.name, w, err)
			}
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error echoes a password: %v", tc.name, err)
		}
	}
	if len(m.mounted) != 0 {
		t.Errorf("a refused stage left a share mounted: %v", m.mounted)
	}
	_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "v", StagingTargetPath: "/stage/v", TargetPath: "/t",
		VolumeCapability: stageReq("v", "/s", nil, nil).VolumeCapability})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("publish of a volume not staged: %v", err)
	}
}

// Heal of a dead share: the share's mount detached and made again with the credentials of its last stage (a 0600
// file, gone after), each of its volumes' staging paths detached and bound again; the pods' binds are left alone.
// After an agent restart an SMB share cannot be healed until a stage gives its credentials again; an NFS share can.
func TestHealMountsAgain(t *testing.T) {
	s, m, b := newServer(t)
	ctx := context.Background()
	secret := map[string]string{"username": "alice", "password": "hunter2"}
	a := stageReq("vol-a", "/stage/a", map[string]string{"source": "//10.88.0.1/data", "subDir": "pvc-a"}, secret)
	whole := stageReq("vol-whole", "/stage/w", map[string]string{"source": "//10.88.0.1/data"}, secret)
	for _, req := range []*csi.NodeStageVolumeRequest{a, whole} {
		if _, err := s.NodeStageVolume(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	pub := &csi.NodePublishVolumeRequest{VolumeId: "vol-a", StagingTargetPath: a.StagingTargetPath, TargetPath: "/pods/p/mount", VolumeCapability: a.VolumeCapability}
	if _, err := s.NodePublishVolume(ctx, pub); err != nil {
		t.Fatal(err)
	}
	shares, err := s.Shares()
	if err != nil || len(shares) != 1 {
		t.Fatalf("shares %v, %v; want one", shares, err)
	}
	where := shares[0].Path
	b.binds[a.StagingTargetPath] = "dead"
	calls := m.calls
	if err := s.Heal(ctx, shares[0].Key); err != nil {
		t.Fatal(err)
	}
	if m.calls != calls+1 || m.mounted[where].What != "//10.88.0.1/data" || len(m.creds) != calls+1 || m.creds[calls] != "-rw------- username=alice\npassword=hunter2\n" {
		t.Errorf("after heal: %d mounts, share %+v, credentials at each %q", m.calls, m.mounted[where], m.creds)
	}
	if left, _ := os.ReadDir(filepath.Join(s.cfg.Root, "/run/berth/shares")); len(left) != 0 {
		t.Errorf("credentials files left after the heal: %v", left)
	}
	if fmt.Sprint(b.detached) != fmt.Sprint([]string{where, a.StagingTargetPath, whole.StagingTargetPath}) && fmt.Sprint(b.detached) != fmt.Sprint([]string{where, whole.StagingTargetPath, a.StagingTargetPath}) {
		t.Errorf("detached %v, want the share, then both staging paths", b.detached)
	}
	if b.binds[a.StagingTargetPath] != filepath.Join(where, "pvc-a") || b.binds[whole.StagingTargetPath] != where || b.binds[pub.TargetPath] != a.StagingTargetPath {
		t.Errorf("binds after heal: %v", b.binds)
	}

	s2 := New(s.cfg, m, b) // the agent restarted: the password is nowhere but in the Secret
	if err := s2.Heal(ctx, shares[0].Key); err == nil || !strings.Contains(err.Error(), "credentials are not known since the agent restarted") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("heal after a restart: %v", err)
	}
	if _, err := s2.NodeStageVolume(ctx, stageReq("vol-b", "/stage/b", map[string]string{"source": "//10.88.0.1/data"}, secret)); err != nil {
		t.Fatal(err)
	}
	if err := s2.Heal(ctx, shares[0].Key); err != nil {
		t.Errorf("heal after a stage gave the credentials again: %v", err)
	}
	if err := s2.Heal(ctx, "no-such-share"); err != nil {
		t.Errorf("heal of a share unstaged meanwhile: %v", err)
	}

	n := New(Config{Protocol: mountopts.NFS, NodeID: "node-1", StateDir: "/var/lib/berth/shares/nfs", Root: s.cfg.Root}, m, b)
	if _, err := n.NodeStageVolume(ctx, stageReq("vol-n", "/stage/n", map[string]string{"source": "files:/export"}, nil)); err != nil {
		t.Fatal(err)
	}
	n = New(n.cfg, m, b)
	ns, _ := n.Shares()
	if err := n.Heal(ctx, ns[0].Key); err != nil {
		t.Errorf("heal of an NFS share after a restart: %v", err)
	}
}
