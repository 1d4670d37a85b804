package nodeready

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestReadyAndLost(t *testing.T) {
	node := func(conds ...corev1.NodeCondition) *corev1.Node {
		return &corev1.Node{Status: corev1.NodeStatus{Conditions: conds}}
	}
	pressure := corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue}
	for _, c := range []struct {
		name        string
		n           *corev1.Node
		ready, lost bool
	}{
		{"no conditions yet", node(), false, false},
		{"ready", node(pressure, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue}), true, false},
		{"not ready", node(corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse}), false, false},
		{"lost", node(corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}, pressure), false, true},
		{"only other conditions", node(pressure), false, false},
	} {
		if Ready(c.n) != c.ready || Lost(c.n) != c.lost {
			t.Errorf("%s: Ready %v Lost %v, want %v %v", c.name, Ready(c.n), Lost(c.n), c.ready, c.lost)
		}
	}
}

// Wait returns the Node once it turns Ready, and otherwise names what it last saw when its context ends.
func TestWait(t *testing.T) {
	cs := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady", Message: "cni not initialized"}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := Wait(ctx, cs.CoreV1().Nodes(), "n1", 5*time.Millisecond); err == nil || !strings.Contains(err.Error(), "Ready=False KubeletNotReady: cni not initialized") {
		t.Errorf("not ready: err = %v", err)
	}
	if _, err := Wait(ctx, cs.CoreV1().Nodes(), "n2", 5*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing node: err = %v", err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		n, _ := cs.CoreV1().Nodes().Get(context.Background(), "n1", metav1.GetOptions{})
		n.Status.Conditions[0].Status = corev1.ConditionTrue
		cs.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{})
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if n, err := Wait(ctx2, cs.CoreV1().Nodes(), "n1", 5*time.Millisecond); err != nil || !Ready(n) {
		t.Errorf("turned ready: %v", err)
	}
}
