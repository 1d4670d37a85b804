package podwait

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestPhase(t *testing.T) {
	pod := func(name string, ph corev1.PodPhase) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Status: corev1.PodStatus{Phase: ph, Message: "m"}}
	}
	pods := fake.NewClientset(pod("ok", corev1.PodSucceeded), pod("failed", corev1.PodFailed), pod("pending", corev1.PodPending)).CoreV1().Pods("default")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if p, err := Phase(ctx, pods, "ok", corev1.PodSucceeded, 10*time.Millisecond); err != nil || p.Name != "ok" {
		t.Errorf("succeeded pod: %v", err)
	}
	if _, err := Phase(ctx, pods, "failed", corev1.PodSucceeded, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "ended Failed") {
		t.Errorf("failed pod: err = %v", err)
	}
	if _, err := Phase(ctx, pods, "ok", corev1.PodRunning, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "ended Succeeded, want Running") {
		t.Errorf("a pod that ended while Running was wanted: err = %v", err)
	}
	if _, err := Phase(ctx, pods, "pending", corev1.PodRunning, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "last seen: phase Pending") {
		t.Errorf("pending pod: err = %v", err)
	}
}
