package node

import (
	"context"
	"maps"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// A changed Secret re-stages the volumes that name it: their share is mounted anew with the new credentials
// (0600 file, gone after), each staging path bound to it, the old share mount gone with its last volume; a volume
// naming another Secret stays where it is; the same content again changes nothing; after an agent restart the
// Secret's unchanged content makes the credentials known again, for Heal; a Secret that does not parse changes
// nothing and says which key is wrong.
func TestRotateRestages(t *testing.T) {
	s, m, b := newServer(t)
	ctx := context.Background()
	src := map[string]string{"source": "//10.88.0.1/data", "subDir": "pvc-a"}
	old := map[string]string{"username": "alice", "password": "old-pw"}
	for _, id := range []string{"v1", "v2", "other"} {
		if _, err := s.NodeStageVolume(ctx, stageReq(id, "/stage/"+id, src, old)); err != nil {
			t.Fatal(err)
		}
	}
	pub := &csi.NodePublishVolumeRequest{VolumeId: "v1", StagingTargetPath: "/stage/v1", TargetPath: "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/pv-one/mount",
		VolumeCapability: stageReq("v1", "", nil, nil).VolumeCapability}
	if _, err := s.NodePublishVolume(ctx, pub); err != nil {
		t.Fatal(err)
	}
	uses, err := s.SecretUses()
	if err != nil || len(uses) != 3 || uses[1].VolumeID != "v1" || uses[1].PV != "pv-one" || uses[2].PV != "" || uses[2].Secret != nil {
		t.Fatalf("secret uses %+v %v, want three, v1's PV pv-one from its publish path", uses, err)
	}
	files := SecretRef{Namespace: "shares", Name: "files"}
	for _, id := range []string{"v1", "v2"} {
		if err := s.SetSecret(id, files); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetSecret("other", SecretRef{Namespace: "shares", Name: "other"}); err != nil {
		t.Fatal(err)
	}
	oldShare := strings.TrimSuffix(b.binds["/stage/v1"], "/pvc-a")
	m.creds = nil

	restaged, err := s.Rotate(ctx, files, map[string]string{"username": "alice", "password": "new-pw"})
	if err != nil || strings.Join(restaged, ",") != "v1,v2" {
		t.Fatalf("Rotate: %v %v, want v1 and v2 re-staged", restaged, err)
	}
	if len(m.creds) != 1 || m.creds[0] != "-rw------- username=alice\npassword=new-pw\n" {
		t.Errorf("credentials files at the new mount: %q", m.creds)
	}
	newShare := strings.TrimSuffix(b.binds["/stage/v1"], "/pvc-a")
	if newShare == oldShare || b.binds["/stage/v2"] != newShare+"/pvc-a" || b.binds["/stage/other"] != oldShare+"/pvc-a" {
		t.Errorf("staging binds after the rotation: %v (old share %s)", b.binds, oldShare)
	}
	if b.binds[pub.TargetPath] != "/stage/v1" {
		t.Errorf("the running pod's bind changed: %v", b.binds[pub.TargetPath])
	}
	if len(m.mounted) != 2 {
		t.Errorf("share mounts %d, want 2: the new one and the old one, which 'other' still uses", len(m.mounted))
	}
	if again, err := s.Rotate(ctx, files, map[string]string{"username": "alice", "password": "new-pw"}); err != nil || len(again) != 0 || len(m.creds) != 1 {
		t.Errorf("the same content again: re-staged %v, %v, mounts made %d", again, err, len(m.creds))
	}
	if _, err := s.Rotate(ctx, SecretRef{Namespace: "shares", Name: "other"}, map[string]string{"username": "alice", "password": "new-pw"}); err != nil {
		t.Fatal(err)
	}
	if len(m.mounted) != 1 || b.binds["/stage/other"] != newShare+"/pvc-a" {
		t.Errorf("'other' rotated to the same credentials: mounts %d (want the old one gone), bound from %s", len(m.mounted), b.binds["/stage/other"])
	}

	s2 := New(s.cfg, m, b) // the agent restarted: credentials unknown
	shares, _ := s2.Shares()
	if err := s2.Heal(ctx, shares[0].Key); err == nil {
		t.Fatal("Heal after a restart with no Secret seen: no error")
	}
	if restaged, err := s2.Rotate(ctx, files, map[string]string{"username": "alice", "password": "new-pw"}); err != nil || len(restaged) != 0 {
		t.Fatalf("the unchanged Secret after a restart: %v %v", restaged, err)
	}
	if err := s2.Heal(ctx, shares[0].Key); err != nil {
		t.Errorf("Heal with the credentials known again from the Secret: %v", err)
	}

	before, mounts := maps.Clone(b.binds), len(m.creds)
	if _, err := s2.Rotate(ctx, files, map[string]string{"user": "alice"}); err == nil || !strings.Contains(err.Error(), `the Secret shares/files: the Secret's key "user": unknown`) {
		t.Errorf("a Secret that does not parse: %v", err)
	}
	if !maps.Equal(before, b.binds) || len(m.creds) != mounts {
		t.Errorf("a Secret that does not parse changed the binds (%v, was %v) or mounted", b.binds, before)
	}
}

func TestPVOfTarget(t *testing.T) {
	for target, want := range map[string]string{
		"/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pvc-1234/mount":  "pvc-1234",
		"/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/pvc-1234/mount/": "pvc-1234",
		"/tmp/sanity/mount/target":                  "",
		"/var/lib/kubelet/pods/uid/volumes/x/mount": "",
		"mount": "",
	} {
		if got := pvOfTarget(target); got != want {
			t.Errorf("pvOfTarget(%q) = %q, want %q", target, got, want)
		}
	}
}
