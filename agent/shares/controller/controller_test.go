package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"berth.dev/berth/agent/shares/mountopts"
	"berth.dev/berth/agent/shares/volume"
)

// fakeDirs records what was asked of the share (unit tests of the logic; the real directories are made on real
// shares in guests).
type fakeDirs struct {
	calls []string
	err   error // what Make answers
}

func (f *fakeDirs) Make(_ context.Context, share volume.Volume, creds volume.Credentials, dir string) error {
	f.calls = append(f.calls, fmt.Sprintf("make %s %s as %q", share.Source(), dir, creds.Username))
	return f.err
}
func (f *fakeDirs) Remove(_ context.Context, share volume.Volume, creds volume.Credentials, dir string) error {
	f.calls = append(f.calls, fmt.Sprintf("remove %s %s as %q", share.Source(), dir, creds.Username))
	return nil
}
func (f *fakeDirs) Rename(_ context.Context, share volume.Volume, creds volume.Credentials, dir, to string) error {
	f.calls = append(f.calls, fmt.Sprintf("rename %s %s to %s as %q", share.Source(), dir, to, creds.Username))
	return nil
}

var rwx = []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}}}

// A volume is a directory named for it under the class's subDir; its context is what the Node service mounts;
// creating it again changes nothing; deleting it removes, archives or keeps the directory as onDelete says, with
// the Secret's credentials, and its ID carries all that.
func TestCreateAndDelete(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ onDelete, want string }{
		{"", `remove //files/data base/pvc-1 as "alice"`},
		{Archive, `rename //files/data base/pvc-1 to base/archived-pvc-1 as "alice"`},
		{Retain, ""},
	} {
		d := &fakeDirs{}
		s := New(mountopts.SMB, d)
		params := map[string]string{"source": "//files/data", "subDir": "base", "csi.storage.k8s.io/pvc/name": "data"}
		if c.onDelete != "" {
			params[KeyOnDelete] = c.onDelete
		}
		secrets := map[string]string{"username": "alice", "password": "hunter2"}
		req := &csi.CreateVolumeRequest{Name: "pvc-1", Parameters: params, Secrets: secrets, VolumeCapabilities: rwx,
			CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}}
		var id string
		for range 2 {
			resp, err := s.CreateVolume(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			v := resp.GetVolume()
			if v.GetVolumeContext()["source"] != "//files/data" || v.GetVolumeContext()["subDir"] != "base/pvc-1" || v.GetCapacityBytes() != 1<<30 {
				t.Errorf("volume %+v", v)
			}
			if id != "" && v.GetVolumeId() != id {
				t.Errorf("a second CreateVolume gave another ID: %q, %q", id, v.GetVolumeId())
			}
			id = v.GetVolumeId()
		}
		if strings.Contains(id, "hunter2") {
			t.Errorf("the ID holds the password: %s", id)
		}
		if _, err := s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id, Secrets: secrets}); err != nil {
			t.Fatal(err)
		}
		want := `make //files/data base/pvc-1 as "alice"`
		want = want + "\n" + want
		if c.want != "" {
			want += "\n" + c.want
		}
		if got := strings.Join(d.calls, "\n"); got != want {
			t.Errorf("onDelete %q: the share was asked\n%s\nwant\n%s", c.onDelete, got, want)
		}
	}
	// NFS, the whole export as the base.
	d := &fakeDirs{}
	resp, err := New(mountopts.NFS, d).CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-2", Parameters: map[string]string{"source": "files:/export"}, VolumeCapabilities: rwx})
	if err != nil || resp.GetVolume().GetVolumeContext()["subDir"] != "pvc-2" || d.calls[0] != `make files:/export pvc-2 as ""` {
		t.Errorf("NFS: %v, %v, %v", resp, err, d.calls)
	}
}

// Bad requests are refused with every problem named by its field, and nothing is made; a volume ID that is not
// the driver's is refused.
func TestRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	d := &fakeDirs{}
	s := New(mountopts.SMB, d)
	_, err := s.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "../x", Parameters: map[string]string{"source": "files:/export", "onDelete": "shred", "sbuDir": "a"},
		VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}},
		Secrets:            map[string]string{"password": "hunter2"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("%v", err)
	}
	for _, want := range []string{`name: "../x"`, "volume_capabilities[0]: a share is a file system", `parameters.onDelete: "shred"`,
		"parameters.sbuDir: unknown", `parameters.source: "files:/export" is an nfs share; this driver provisions smb shares`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("the error echoes the password: %v", err)
	}
	_, err = s.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "pvc-1", Parameters: map[string]string{"source": "//files/data"}, VolumeCapabilities: rwx,
		Secrets: map[string]string{"password": "hunter2"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"username"`) {
		t.Errorf("a Secret without a username: %v", err)
	}
	if len(d.calls) != 0 {
		t.Errorf("a refused request reached the share: %v", d.calls)
	}
	if _, err := s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("delete without a volume_id: %v", err)
	}
	// An ID this driver never made (not one, a directory out of the share, the other driver's) is a volume that
	// does not exist: deleted, as the CSI spec has it, and nothing is done on any share.
	for _, id := range []string{"pvc-1", "source=%2F%2Ffiles%2Fdata&subDir=&onDelete=delete", "source=%2F%2Ffiles%2Fdata&subDir=..%2Fx&onDelete=delete",
		"onDelete=delete&source=files%3A%2Fexport&subDir=pvc-1"} {
		if _, err := s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("delete %q: %v", id, err)
		}
	}
	// ValidateVolumeCapabilities: the ID and capabilities are required; a volume not this driver's is not found.
	if _, err := s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "x"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("validate without capabilities: %v", err)
	}
	if _, err := s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "onDelete=delete&source=files%3A%2Fexport&subDir=pvc-1",
		VolumeCapabilities: rwx}); status.Code(err) != codes.NotFound {
		t.Errorf("validate the other driver's volume: %v", err)
	}
	if len(d.calls) != 0 {
		t.Errorf("a refused delete reached the share: %v", d.calls)
	}
}

// A volume's name becomes its directory's: any name of letters, digits, '-', '.' and '_' that starts with a
// letter or a digit is one (a PersistentVolume's, csi-sanity's upper-case ones); a path, a dot name or an empty
// one is refused before the share is touched.
func TestVolumeNames(t *testing.T) {
	for n, ok := range map[string]bool{"pvc-0e47d700-dcbb": true, "sanity-controller-validate-A0662B17-8DC0C25B": true, "a_b.c": true,
		strings.Repeat("a", 253): true, strings.Repeat("a", 254): false, "": false, ".": false, "..": false, ".hidden": false, "a/b": false, "a b": false} {
		d := &fakeDirs{}
		_, err := New(mountopts.NFS, d).CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: n,
			Parameters: map[string]string{"source": "files:/export"}, VolumeCapabilities: rwx})
		if (err == nil) != ok || (!ok && len(d.calls) != 0) {
			t.Errorf("name %q: %v (calls %v), want accepted %v", n, err, d.calls, ok)
		}
	}
}

// A share that does not answer in time is DeadlineExceeded (the directory may still come: the provisioner asks
// again), any other failure Internal.
func TestCreateFailureCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("//files/data: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("//files/data: %w", context.Canceled), codes.Canceled},
		{errors.New("mount //files/data: permission denied"), codes.Internal},
	} {
		s := New(mountopts.SMB, &fakeDirs{err: c.err})
		_, err := s.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: rwx,
			Parameters: map[string]string{"source": "//files/data"}, Secrets: map[string]string{"username": "alice", "password": "x"}})
		if status.Code(err) != c.want {
			t.Errorf("Make failing with %v: %v, want code %s", c.err, err, c.want)
		}
	}
}
