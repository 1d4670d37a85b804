// Package provisioner turns PersistentVolumeClaims of a share driver's StorageClass into PersistentVolumes, with
// sig-storage-lib-external-provisioner (which watches the claims, leader-elects and retries) and the driver's
// Controller service in process (no external-provisioner sidecar): Provision calls CreateVolume and writes the
// PersistentVolume the Node service mounts; Delete calls DeleteVolume. Secrets are named by the StorageClass's
// parameters with the keys the CSI external-provisioner reads, so a class written for it works here:
// csi.storage.k8s.io/provisioner-secret-name and -namespace (for CreateVolume and DeleteVolume, remembered on the
// PersistentVolume as the external-provisioner does) and csi.storage.k8s.io/node-stage-secret-name and
// -namespace (the PersistentVolume's nodeStageSecretRef, which the kubelet reads for NodeStageVolume); each may
// use ${pvc.namespace}, ${pvc.name} and ${pv.name}.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// StorageClass parameter keys for secrets (the CSI external-provisioner's).
const (
	KeyProvisionerSecretName      = "csi.storage.k8s.io/provisioner-secret-name"
	KeyProvisionerSecretNamespace = "csi.storage.k8s.io/provisioner-secret-namespace"
	KeyNodeStageSecretName        = "csi.storage.k8s.io/node-stage-secret-name"
	KeyNodeStageSecretNamespace   = "csi.storage.k8s.io/node-stage-secret-namespace"
)

// PersistentVolume annotations that remember the provisioner Secret for DeleteVolume (the external-provisioner's).
const (
	AnnDeletionSecretName      = "volume.kubernetes.io/provisioner-deletion-secret-name"
	AnnDeletionSecretNamespace = "volume.kubernetes.io/provisioner-deletion-secret-namespace"
)

// Provisioner provisions volumes of one driver.
type Provisioner struct {
	Driver     string // the CSI driver's name, also the provisioner's
	Controller csi.ControllerServer
	Secrets    corev1client.SecretsGetter
}

var _ controller.Provisioner = Provisioner{}

// Provision creates the volume and returns its PersistentVolume.
func (p Provisioner) Provision(ctx context.Context, o controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	params := o.StorageClass.Parameters
	if o.PVC.Spec.Selector != nil {
		return nil, controller.ProvisioningFinished, errors.New("spec.selector: a claim with a selector cannot be provisioned (it would bind only to an existing volume)")
	}
	provisionerRef, err := secretRef(params, KeyProvisionerSecretName, KeyProvisionerSecretNamespace, o.PVC, o.PVName)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	stageRef, err := secretRef(params, KeyNodeStageSecretName, KeyNodeStageSecretNamespace, o.PVC, o.PVName)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	secrets, err := p.read(ctx, provisionerRef)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	var caps []*csi.VolumeCapability
	for _, m := range o.PVC.Spec.AccessModes {
		caps = append(caps, &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: o.StorageClass.MountOptions}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: accessMode(m)}})
	}
	size := o.PVC.Spec.Resources.Requests[corev1.ResourceStorage]
	resp, err := p.Controller.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: o.PVName, Parameters: driverParams(params), Secrets: secrets, VolumeCapabilities: caps,
		CapacityRange: &csi.CapacityRange{RequiredBytes: size.Value()}})
	if err != nil {
		state := controller.ProvisioningFinished
		if !final(err) {
			state = controller.ProvisioningInBackground
		}
		return nil, state, fmt.Errorf("StorageClass %s: %s", o.StorageClass.Name, status.Convert(err).Message())
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if o.StorageClass.ReclaimPolicy != nil {
		reclaim = *o.StorageClass.ReclaimPolicy
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: o.PVName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   o.PVC.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              o.StorageClass.Name,
			MountOptions:                  o.StorageClass.MountOptions,
			VolumeMode:                    o.PVC.Spec.VolumeMode,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: p.Driver, VolumeHandle: resp.GetVolume().GetVolumeId(), VolumeAttributes: resp.GetVolume().GetVolumeContext(),
				NodeStageSecretRef: stageRef}},
		},
	}
	if provisionerRef != nil {
		pv.Annotations = map[string]string{AnnDeletionSecretName: provisionerRef.Name, AnnDeletionSecretNamespace: provisionerRef.Namespace}
	}
	return pv, controller.ProvisioningFinished, nil
}

// Delete deletes the volume's directory (or archives or keeps it: the class's onDelete, in the volume's ID).
func (p Provisioner) Delete(ctx context.Context, pv *corev1.PersistentVolume) error {
	src := pv.Spec.CSI
	if src == nil || src.Driver != p.Driver {
		return &controller.IgnoredError{Reason: "not a volume of " + p.Driver}
	}
	var ref *corev1.SecretReference
	if name := pv.Annotations[AnnDeletionSecretName]; name != "" {
		ref = &corev1.SecretReference{Name: name, Namespace: pv.Annotations[AnnDeletionSecretNamespace]}
	}
	secrets, err := p.read(ctx, ref)
	if err != nil {
		return err
	}
	if _, err := p.Controller.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: src.VolumeHandle, Secrets: secrets}); err != nil {
		if status.Code(err) == codes.NotFound {
			return nil
		}
		return fmt.Errorf("PersistentVolume %s: %s", pv.Name, status.Convert(err).Message())
	}
	return nil
}

// read returns a Secret's data as strings; nil ref reads none.
func (p Provisioner) read(ctx context.Context, ref *corev1.SecretReference) (map[string]string, error) {
	if ref == nil {
		return nil, nil
	}
	s, err := p.Secrets.Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	out := make(map[string]string, len(s.Data))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// secretRef reads a Secret's name and namespace from the class's parameters, with their templates filled in;
// neither set is no Secret, one without the other is an error naming both keys.
func secretRef(params map[string]string, nameKey, nsKey string, pvc *corev1.PersistentVolumeClaim, pvName string) (*corev1.SecretReference, error) {
	name, ns := params[nameKey], params[nsKey]
	if name == "" && ns == "" {
		return nil, nil
	}
	if name == "" || ns == "" {
		return nil, fmt.Errorf("StorageClass parameters %s and %s: set both or neither", nameKey, nsKey)
	}
	var errs []error
	fill := func(key, v string) string {
		r := strings.NewReplacer("${pvc.namespace}", pvc.Namespace, "${pvc.name}", pvc.Name, "${pv.name}", pvName)
		out := r.Replace(v)
		if strings.Contains(out, "${") {
			errs = append(errs, fmt.Errorf("StorageClass parameter %s: %q: only ${pvc.namespace}, ${pvc.name} and ${pv.name} are filled in", key, v))
		}
		return out
	}
	ref := &corev1.SecretReference{Name: fill(nameKey, name), Namespace: fill(nsKey, ns)}
	return ref, errors.Join(errs...)
}

// driverParams are the class's parameters the driver reads: all but the csi.storage.k8s.io/ ones, which name
// Secrets for the provisioner and the kubelet (as the CSI external-provisioner strips them).
func driverParams(params map[string]string) map[string]string {
	out := make(map[string]string, len(params))
	for k, v := range params {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			out[k] = v
		}
	}
	return out
}

func accessMode(m corev1.PersistentVolumeAccessMode) csi.VolumeCapability_AccessMode_Mode {
	switch m {
	case corev1.ReadWriteOnce:
		return csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	case corev1.ReadOnlyMany:
		return csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	case corev1.ReadWriteOncePod:
		return csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	default:
		return csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	}
}

// final says whether a CreateVolume error means that no volume was made, as the CSI external-provisioner reads the
// codes: after a deadline, a cancellation or an unavailable service the directory may have been made after all (a
// share that answered late), so the library is told the provisioning goes on in the background: it calls
// Provision again until the answer is known, also for a claim deleted meanwhile, whose volume is then made and,
// released at once, deleted under the class's reclaim policy instead of left on the share.
func final(err error) bool {
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return false
	}
	return true
}
