package secretwatch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"berth.dev/berth/agent/shares/node"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/syncbuf"
	"berth.dev/berth/test/tier"
	"berth.dev/berth/test/wait"
)

// The watch as a node runs it: against a real apiserver with the node authorizer, as system:node:node-1 (what the
// kubelet's client certificate says). A volume of a pod on node-1 has its Secret found in its PV and watched; a
// change of the Secret is handed over; a volume whose PV no pod of node-1 uses is refused by the authorizer, so
// its Secret is neither found nor watched, and the watch says so.
func TestWatchesAsTheNode(t *testing.T) {
	tier.Require(t, tier.Root, tier.Kubernetes)
	cp := controlplane.ForTest(t, controlplane.Config{})
	admin := cp.Client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shares"}}, metav1.CreateOptions{}))
	for _, name := range []string{"files", "elsewhere"} {
		must(admin.CoreV1().Secrets("shares").Create(ctx, secret("shares", name, "one"), metav1.CreateOptions{}))
		p := pv("pv-"+name, "vol-"+name, driver, &corev1.SecretReference{Namespace: "shares", Name: name})
		p.Spec.Capacity = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}
		p.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
		p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "shares", Name: "claim-" + name}
		must(admin.CoreV1().PersistentVolumes().Create(ctx, p, metav1.CreateOptions{}))
		empty := ""
		must(admin.CoreV1().PersistentVolumeClaims("shares").Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "claim-" + name},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-" + name, StorageClassName: &empty, AccessModes: p.Spec.AccessModes,
				Resources: corev1.VolumeResourceRequirements{Requests: p.Spec.Capacity}}}, metav1.CreateOptions{}))
		nodeName := map[string]string{"files": "node-1", "elsewhere": "node-2"}[name]
		must(admin.CoreV1().Pods("shares").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-" + name},
			Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
				Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "claim-" + name}}}}}},
			metav1.CreateOptions{}))
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cp.KubeconfigPath())
	if err != nil {
		t.Fatal(err)
	}
	rc.Impersonate.UserName = "system:node:node-1"
	rc.Impersonate.Groups = []string{"system:nodes", "system:authenticated"}
	asNode, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	// The authorizer learns of pods and volumes from its informers: wait until it lets node-1 read its pod's PV.
	wait.For(t, 30*time.Second, "node-1 allowed to read pv-files", func() bool {
		_, err := asNode.CoreV1().PersistentVolumes().Get(ctx, "pv-files", metav1.GetOptions{})
		return err == nil
	})

	vols := &fakeVolumes{uses: []node.SecretUse{{VolumeID: "vol-files", PV: "pv-files"}, {VolumeID: "vol-elsewhere", PV: "pv-elsewhere"}}}
	logs := &syncbuf.Buffer{}
	done := make(chan struct{})
	go func() {
		Run(ctx, Config{Client: func() (kubernetes.Interface, error) { return asNode, nil }, Driver: driver, Volumes: vols, Interval: 200 * time.Millisecond,
			Log: slog.New(slog.NewTextHandler(io.MultiWriter(os.Stderr, logs), nil))})
		close(done)
	}()
	wait.For(t, 30*time.Second, "shares/files handed over to the node", func() bool { return vols.saw("shares/files one") })
	must(admin.CoreV1().Secrets("shares").Update(ctx, secret("shares", "files", "two"), metav1.UpdateOptions{}))
	wait.For(t, 30*time.Second, "the changed shares/files handed over to the node", func() bool { return vols.saw("shares/files two") })
	wait.For(t, 30*time.Second, "the refusal of pv-elsewhere logged", func() bool {
		return strings.Contains(logs.String(), `pv=pv-elsewhere err="PersistentVolume pv-elsewhere: persistentvolumes \"pv-elsewhere\" is forbidden`)
	})
	if got := vols.secretOf("vol-elsewhere"); got != nil {
		t.Errorf("vol-elsewhere's Secret found as %v through a PV no pod of node-1 uses", got)
	}
	if vols.saw("shares/elsewhere one") {
		t.Error("a Secret of another node's pod was handed over")
	}
	cancel()
	<-done
}
