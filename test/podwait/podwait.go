// Package podwait waits for test pods: until a pod reaches a phase, failing early when it ends in another.
package podwait

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Phase polls pod name every poll until it is in phase want (Running or Succeeded) and returns it. A pod that
// ends (Succeeded or Failed) in another phase is an error at once; when ctx ends first, the error carries the
// last status seen.
func Phase(ctx context.Context, pods typedcorev1.PodInterface, name string, want corev1.PodPhase, poll time.Duration) (*corev1.Pod, error) {
	for {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			switch ph := p.Status.Phase; {
			case ph == want && p.DeletionTimestamp == nil:
				return p, nil
			case ph == corev1.PodSucceeded || ph == corev1.PodFailed:
				return p, fmt.Errorf("pod %s ended %s, want %s: %s %s", name, ph, want, p.Status.Reason, p.Status.Message)
			}
		}
		select {
		case <-ctx.Done():
			last := fmt.Sprint(err)
			if err == nil {
				last = fmt.Sprintf("phase %s %s", p.Status.Phase, p.Status.Message)
			}
			return p, fmt.Errorf("pod %s not %s: %w (last seen: %s)", name, want, ctx.Err(), last)
		case <-time.After(poll):
		}
	}
}
