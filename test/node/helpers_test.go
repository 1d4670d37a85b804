package node

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/test/controlplane"
	"berth.dev/berth/test/images"
	"berth.dev/berth/test/toolbin"
)

// cluster is what node tests join: a control plane, a signed bootstrap token and the pre-built images.
type cluster struct {
	bin  string
	log  *slog.Logger
	cp   *controlplane.ControlPlane
	tok  bootstraptoken.Token
	imgs images.Built
}

func startCluster(t *testing.T, ctx context.Context) cluster {
	t.Helper()
	c := cluster{bin: toolbin.Kubernetes.ForTest(t), log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	c.cp = controlplane.ForTest(t, controlplane.Config{Log: c.log})
	var err error
	if c.imgs, err = images.Build(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if c.tok, err = c.cp.MintToken(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := c.cp.WaitTokenSigned(ctx, c.tok.ID()); err != nil {
		t.Fatal(err)
	}
	return c
}

// runPod creates pod once the namespace's default ServiceAccount exists (the controller manager makes it; pods
// need it) and waits for the pod to reach phase. A pod that fails (when success was wanted) fails the test.
func runPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	for {
		if _, err := cs.CoreV1().ServiceAccounts(pod.Namespace).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("default ServiceAccount of %s never appeared", pod.Namespace)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := cs.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Status.Phase == phase {
			return p
		}
		if p.Status.Phase == corev1.PodFailed || ctx.Err() != nil {
			t.Fatalf("pod %s: phase %s, want %s: %+v", pod.Name, p.Status.Phase, phase, p.Status.ContainerStatuses)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
