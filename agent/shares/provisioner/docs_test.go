package provisioner

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	sharecontroller "berth.dev/berth/agent/shares/controller"
	"berth.dev/berth/agent/shares/mountopts"
	"berth.dev/berth/agent/shares/volume"
	"berth.dev/berth/deploy"
)

// noDirs stands in for the share (a unit test of what the docs' manifests ask; directories are made on real
// shares elsewhere).
type noDirs struct{ made []string }

func (d *noDirs) Make(_ context.Context, share volume.Volume, _ volume.Credentials, dir string) error {
	d.made = append(d.made, share.Source()+" "+dir)
	return nil
}
func (*noDirs) Remove(context.Context, volume.Volume, volume.Credentials, string) error { return nil }
func (*noDirs) Rename(context.Context, volume.Volume, volume.Credentials, string, string) error {
	return nil
}

// The manifests docs/shares.md shows work as written: each StorageClass provisions the claim through the real
// Controller service (every parameter accepted, the Secret read), and the static volume's attributes and mount
// options are accepted by the Node service's parsers.
func TestDocsExamples(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "shares.md"))
	if err != nil {
		t.Fatal(err)
	}
	var manifest []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		manifest = append(manifest, strings.TrimSuffix(m[1], "\n"))
	}
	objs, err := deploy.Objects(strings.Join(manifest, "\n---\n"))
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset()
	var classes []*storagev1.StorageClass
	var claim *corev1.PersistentVolumeClaim
	var static *corev1.PersistentVolume
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Secret:
			o.Data = map[string][]byte{}
			for k, v := range o.StringData { // what the apiserver does with stringData
				o.Data[k] = []byte(v)
			}
			if _, err := cs.CoreV1().Secrets(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		case *storagev1.StorageClass:
			classes = append(classes, o)
		case *corev1.PersistentVolumeClaim:
			claim = o
		case *corev1.PersistentVolume:
			static = o
		}
	}
	if len(classes) != 2 || claim == nil || static == nil {
		t.Fatalf("docs/shares.md: want two StorageClasses, a claim and a static volume; got %d objects", len(objs))
	}
	for _, class := range classes {
		protocol := mountopts.SMB
		if class.Provisioner == "nfs.shares.berth.dev" {
			protocol = mountopts.NFS
		}
		dirs := &noDirs{}
		p := Provisioner{Driver: class.Provisioner, Controller: sharecontroller.New(protocol, dirs), Secrets: cs.CoreV1()}
		pv, _, err := p.Provision(context.Background(), controller.ProvisionOptions{StorageClass: class, PVName: "pvc-1", PVC: claim})
		if err != nil {
			t.Error(err) // it names the class
			continue
		}
		if len(dirs.made) != 1 || !strings.HasSuffix(dirs.made[0], " volumes/pvc-1") {
			t.Errorf("StorageClass %s made %v", class.Name, dirs.made)
		}
		if _, err := mountopts.Build(mountopts.Request{Protocol: protocol, Options: pv.Spec.MountOptions}); err != nil {
			t.Errorf("StorageClass %s's mountOptions: %v", class.Name, err)
		}
	}
	if _, err := volume.Parse(static.Spec.CSI.VolumeAttributes); err != nil {
		t.Errorf("the static volume's attributes: %v", err)
	}
	if _, err := mountopts.Build(mountopts.Request{Protocol: mountopts.NFS, Options: static.Spec.MountOptions}); err != nil {
		t.Errorf("the static volume's mountOptions: %v", err)
	}
}
