package podmeta_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"

	"berth.dev/berth/agent/logship/podmeta"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/wait"
)

func pod(t *testing.T, cs kubernetes.Interface, name, node string, labels map[string]string) *corev1.Pod {
	t.Helper()
	p, err := cs.CoreV1().Pods("default").Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Against a real apiserver: the informer holds this node's pods only; a pod's labels come back sorted, and a pod
// created or relabelled later is seen.
func TestLabelsOfThisNodesPods(t *testing.T) {
	cp := controlplane.ForTest(t, controlplane.Config{})
	cs := cp.Client
	mine := pod(t, cs, "mine", "node-1", map[string]string{"app": "hello", "tier": "web"})
	other := pod(t, cs, "other", "node-2", map[string]string{"app": "other"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mc, err := metadata.NewForConfig(cp.Admin)
	if err != nil {
		t.Fatal(err)
	}
	p := podmeta.Start(ctx, mc, "node-1")
	if !p.WaitSynced(ctx) {
		t.Fatal("never synced")
	}
	if got := fmt.Sprint(p.Attrs(mine.UID)); got != "[{kubernetes.labels.app hello} {kubernetes.labels.tier web}]" {
		t.Errorf("mine: %s", got)
	}
	if got := p.Attrs(other.UID); got != nil {
		t.Errorf("a pod of another node is known: %v", got)
	}
	late := pod(t, cs, "late", "node-1", map[string]string{"app": "late"})
	wait.For(t, 10*time.Second, "the late pod's labels", func() bool { return len(p.Attrs(late.UID)) == 1 })
	mine.Labels["tier"] = "api"
	if _, err := cs.CoreV1().Pods("default").Update(ctx, mine, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the new label", func() bool {
		return fmt.Sprint(p.Attrs(mine.UID)) == "[{kubernetes.labels.app hello} {kubernetes.labels.tier api}]"
	})
}
