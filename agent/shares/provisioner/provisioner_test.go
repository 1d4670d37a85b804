package provisioner

import (
	"cmp"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// recorder is a Controller service that records its requests (unit tests of the provisioner's logic; the real
// Controller service makes directories on real shares in the guest test and on a bound directory in
// TestProvisionsOnARealControlPlane).
type recorder struct {
	csi.UnimplementedControllerServer
	create []*csi.CreateVolumeRequest
	delete []*csi.DeleteVolumeRequest
	err    error
}

func (r *recorder) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	r.create = append(r.create, req)
	if r.err != nil {
		return nil, r.err
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{VolumeId: "id-" + req.Name, VolumeContext: map[string]string{"source": "//files/data"}}}, nil
}

func (r *recorder) DeleteVolume(_ context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	r.delete = append(r.delete, req)
	return &csi.DeleteVolumeResponse{}, r.err
}

func claim() *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "data"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}
}

func secret(ns, name string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Data: map[string][]byte{"username": []byte("alice"), "password": []byte("hunter2")}}
}

// A claim becomes a volume: CreateVolume is called with the class's own parameters (not the secret-naming ones)
// and the provisioner Secret's data; the PersistentVolume names the driver, the volume's ID and context, the
// kubelet's node-stage Secret (templates filled in) and the class's reclaim policy and mount options, and
// remembers the provisioner Secret for DeleteVolume, which gets it again.
func TestProvisionAndDelete(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(secret("shares", "files-admin"), secret("team-a", "data-creds"))
	rec := &recorder{}
	p := Provisioner{Driver: "smb.shares.berth.dev", Controller: rec, Secrets: cs.CoreV1()}
	retain := corev1.PersistentVolumeReclaimRetain
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "files"}, Provisioner: p.Driver, ReclaimPolicy: &retain,
		MountOptions: []string{"dir_mode=0770"},
		Parameters: map[string]string{"source": "//files/data", "subDir": "vols", "onDelete": "archive",
			KeyProvisionerSecretName: "files-admin", KeyProvisionerSecretNamespace: "shares",
			KeyNodeStageSecretName: "${pvc.name}-creds", KeyNodeStageSecretNamespace: "${pvc.namespace}"}}
	pv, state, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: class, PVName: "pvc-1234", PVC: claim()})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("provision: %v %v", state, err)
	}
	if len(rec.create) != 1 {
		t.Fatalf("CreateVolume calls: %d", len(rec.create))
	}
	req := rec.create[0]
	if req.Name != "pvc-1234" || len(req.Parameters) != 3 || req.Parameters["subDir"] != "vols" || req.Parameters["onDelete"] != "archive" {
		t.Errorf("CreateVolume parameters: %v (want only the driver's)", req.Parameters)
	}
	if req.Secrets["username"] != "alice" || req.Secrets["password"] != "hunter2" {
		t.Errorf("CreateVolume secrets: got %d keys", len(req.Secrets))
	}
	if req.CapacityRange.GetRequiredBytes() != 1<<30 || len(req.VolumeCapabilities) != 1 ||
		req.VolumeCapabilities[0].GetAccessMode().GetMode() != csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER ||
		strings.Join(req.VolumeCapabilities[0].GetMount().GetMountFlags(), ",") != "dir_mode=0770" {
		t.Errorf("CreateVolume capacity and capabilities: %v", req)
	}
	src := pv.Spec.CSI
	if pv.Name != "pvc-1234" || src == nil || src.Driver != p.Driver || src.VolumeHandle != "id-pvc-1234" || src.VolumeAttributes["source"] != "//files/data" {
		t.Fatalf("PersistentVolume: %+v", pv)
	}
	if ref := src.NodeStageSecretRef; ref == nil || ref.Namespace != "team-a" || ref.Name != "data-creds" {
		t.Errorf("nodeStageSecretRef: %v", ref)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != retain || pv.Spec.StorageClassName != "files" || pv.Spec.MountOptions[0] != "dir_mode=0770" ||
		pv.Spec.Capacity.Storage().Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("PersistentVolume spec: %+v", pv.Spec)
	}
	if pv.Annotations[AnnDeletionSecretName] != "files-admin" || pv.Annotations[AnnDeletionSecretNamespace] != "shares" {
		t.Errorf("deletion secret annotations: %v", pv.Annotations)
	}
	if err := p.Delete(ctx, pv); err != nil {
		t.Fatal(err)
	}
	if len(rec.delete) != 1 || rec.delete[0].VolumeId != "id-pvc-1234" || rec.delete[0].Secrets["username"] != "alice" {
		t.Fatalf("DeleteVolume: %v", rec.delete)
	}
	// A volume already gone is deleted; another driver's volume is not this provisioner's.
	rec.err = status.Error(codes.NotFound, "gone")
	if err := p.Delete(ctx, pv); err != nil {
		t.Errorf("deleting a volume that is gone: %v", err)
	}
	pv.Spec.CSI.Driver = "nfs.shares.berth.dev"
	var ignored *controller.IgnoredError
	if err := p.Delete(ctx, pv); !errors.As(err, &ignored) {
		t.Errorf("another driver's volume: %v", err)
	}
}

// What the provisioner cannot do is an error naming the StorageClass parameter, the Secret or the driver's
// complaint (each becomes the claim's ProvisioningFailed Event), and no password is in it.
func TestProvisionRefusals(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset(secret("shares", "files-admin"))
	for _, c := range []struct {
		name   string
		params map[string]string
		err    error
		want   string
		state  controller.ProvisioningState
	}{
		{"half a secret reference", map[string]string{KeyProvisionerSecretName: "files-admin"}, nil,
			"StorageClass parameters csi.storage.k8s.io/provisioner-secret-name and csi.storage.k8s.io/provisioner-secret-namespace: set both or neither", ""},
		{"an unknown template", map[string]string{KeyNodeStageSecretName: "${pvc.annotations['x']}", KeyNodeStageSecretNamespace: "shares"}, nil,
			"csi.storage.k8s.io/node-stage-secret-name: \"${pvc.annotations['x']}\": only ${pvc.namespace}, ${pvc.name} and ${pv.name} are filled in", ""},
		{"a missing Secret", map[string]string{KeyProvisionerSecretName: "nope", KeyProvisionerSecretNamespace: "shares"}, nil,
			`Secret shares/nope: secrets "nope" not found`, ""},
		{"the driver refuses", map[string]string{KeyProvisionerSecretName: "files-admin", KeyProvisionerSecretNamespace: "shares"},
			status.Error(codes.InvalidArgument, "parameters.source: required"), "StorageClass files: parameters.source: required", ""},
		// A deadline may have passed while the directory was being made: tried again until the answer is known.
		{"the share does not answer in time", map[string]string{KeyProvisionerSecretName: "files-admin", KeyProvisionerSecretNamespace: "shares"},
			status.Error(codes.DeadlineExceeded, "make pvc-1 on //files/data: context deadline exceeded"), "context deadline exceeded", controller.ProvisioningInBackground},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := &recorder{err: c.err}
			p := Provisioner{Driver: "smb.shares.berth.dev", Controller: rec, Secrets: cs.CoreV1()}
			class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "files"}, Provisioner: p.Driver, Parameters: c.params}
			pv, state, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: class, PVName: "pvc-1", PVC: claim()})
			if err == nil || pv != nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, %v; want an error with %q", pv, err, c.want)
			}
			if want := cmp.Or(c.state, controller.ProvisioningFinished); state != want {
				t.Errorf("state %q, want %q", state, want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the password is in the error: %v", err)
			}
		})
	}
	// A claim with a selector binds only to volumes that exist: nothing is created for it.
	rec := &recorder{}
	p := Provisioner{Driver: "smb.shares.berth.dev", Controller: rec, Secrets: cs.CoreV1()}
	pvc := claim()
	pvc.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}
	if _, _, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: &storagev1.StorageClass{}, PVName: "pvc-1", PVC: pvc}); err == nil || len(rec.create) != 0 {
		t.Errorf("a claim with a selector: %v, %d CreateVolume calls", err, len(rec.create))
	}
}
