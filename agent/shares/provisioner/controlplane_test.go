package provisioner

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"berth.dev/berth/agent/leader"
	sharecontroller "berth.dev/berth/agent/shares/controller"
	"berth.dev/berth/agent/shares/mountopts"
	"berth.dev/berth/agent/shares/sharedirs"
	"berth.dev/berth/deploy"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/wait"
)

// The provisioner against a real apiserver and kube-controller-manager (whose PersistentVolume binder binds what
// it provisions), with the real Controller service making directories through mount(2) in its own mount
// namespace. The "share" is a directory of this host bound in its place (this kernel has no cifs or NFS client;
// the same Controller service on real smbd and nfs-ganesha mounts is tested in test/shares). A claim of the
// class gets a volume, bound, whose directory is on the share; a claim whose class names a missing Secret gets a
// ProvisioningFailed Event naming it; a deleted claim's directory is archived (the class's onDelete) and its
// volume deleted; stopping the provisioner releases its lease. The provisioner has the RBAC of deploy/shares.yaml
// and no more.
func TestProvisionsOnARealControlPlane(t *testing.T) {
	tier.Require(t, tier.Root, tier.Kubernetes)
	cp := controlplane.ForTest(t, controlplane.Config{})
	cs := cp.Client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := t.TempDir()
	dirs := sharedirs.Kernel{Mount: func(source, target, fstype, data string) error {
		return unix.Mount(server, target, "", unix.MS_BIND, "")
	}}
	const driver = "smb.shares.berth.dev"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shares"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("shares").Create(ctx, secret("shares", "files-admin"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	class := func(name, secretName string) {
		t.Helper()
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: driver,
			Parameters: map[string]string{"source": "//127.0.0.1/data", "subDir": "vols", "onDelete": "archive",
				KeyProvisionerSecretName: secretName, KeyProvisionerSecretNamespace: "shares",
				KeyNodeStageSecretName: secretName, KeyNodeStageSecretNamespace: "shares"}}
		if _, err := cs.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	class("files", "files-admin")
	class("broken", "nope")
	client := asProvisioner(t, cp.KubeconfigPath(), cs)

	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Client: client, Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
			Drivers:  []Driver{{Name: driver, Controller: sharecontroller.New(mountopts.SMB, dirs)}},
			Election: leader.Election{Namespace: "kube-system", Name: "berth-shares-provisioner", Identity: "test-1"}})
	}()
	claimOf := func(name, className string) {
		t.Helper()
		pvc := claim()
		pvc.Namespace, pvc.Name, pvc.Spec.StorageClassName = "default", name, &className
		if _, err := cs.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	claimOf("data", "files")
	claimOf("nosecret", "broken")

	var pvName string
	wait.For(t, 90*time.Second, "the claim bound to a provisioned volume", func() bool {
		pvc, err := cs.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data", metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != corev1.ClaimBound {
			return false
		}
		pvName = pvc.Spec.VolumeName
		return true
	})
	pv, err := cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != driver || pv.Spec.CSI.NodeStageSecretRef == nil || pv.Spec.CSI.NodeStageSecretRef.Name != "files-admin" ||
		pv.Spec.CSI.VolumeAttributes["subDir"] != "vols/"+pvName || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("the volume: %+v", pv.Spec)
	}
	if pv.Spec.Capacity.Storage().Cmp(resource.MustParse("1Gi")) != 0 {
		t.Errorf("capacity %v", pv.Spec.Capacity)
	}
	dir := filepath.Join(server, "vols", pvName)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o777 {
		t.Fatalf("the volume's directory on the share: %v %v", fi, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kept"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}

	wait.For(t, 60*time.Second, "a ProvisioningFailed Event naming the missing Secret", func() bool {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", "nosecret").String()})
		if err != nil {
			return false
		}
		for _, e := range evs.Items {
			if e.Reason == "ProvisioningFailed" && strings.Contains(e.Message, `Secret shares/nope: secrets "nope" not found`) {
				return true
			}
		}
		return false
	})

	if err := cs.CoreV1().PersistentVolumeClaims("default").Delete(ctx, "data", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 90*time.Second, "the released volume deleted", func() bool {
		_, err := cs.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the volume's directory is still there: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(server, "vols", "archived-"+pvName, "kept")); err != nil || string(b) != "data" {
		t.Errorf("the archived directory: %q %v", b, err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after its context ended: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30 s after its context ended")
	}
	lease, err := cs.CoordinationV1().Leases("kube-system").Get(context.Background(), "berth-shares-provisioner", metav1.GetOptions{})
	if err != nil || (lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "") {
		t.Errorf("the lease after the provisioner stopped: %v %v", lease, err)
	}
}

// asProvisioner applies deploy/shares.yaml's RBAC and returns a client that is its ServiceAccount (impersonated by
// the admin), so the test proves the manifest's role is enough.
func asProvisioner(t *testing.T, kubeconfig string, admin kubernetes.Interface) kubernetes.Interface {
	t.Helper()
	ctx := context.Background()
	objs, err := deploy.Objects(deploy.Shares)
	if err != nil {
		t.Fatal(err)
	}
	var sa *corev1.ServiceAccount
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			sa = o
			_, err = admin.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = admin.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = admin.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = admin.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			continue
		}
		if err != nil {
			t.Fatalf("apply %T: %v", o, err)
		}
	}
	if sa == nil {
		t.Fatal("deploy/shares.yaml has no ServiceAccount")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.Impersonate.UserName = "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
