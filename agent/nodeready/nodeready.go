// Package nodeready reads a Node's Ready condition and waits for it, the one place the agent's join, its route controller and the
// test tools look at it.
package nodeready

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// Condition is the Node's Ready condition, nil before the kubelet first reports one.
func Condition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// Ready reports whether the Node's Ready condition is True.
func Ready(n *corev1.Node) bool {
	c := Condition(n)
	return c != nil && c.Status == corev1.ConditionTrue
}

// Lost reports whether the node controller has lost the Node (Ready is Unknown: its kubelet stopped reporting),
// as opposed to a kubelet that reports NotReady.
func Lost(n *corev1.Node) bool {
	c := Condition(n)
	return c != nil && c.Status == corev1.ConditionUnknown
}

// Wait polls the Node every poll until it is Ready and returns it. When ctx ends first, the error says what the
// last poll saw: the Node's Ready condition, or why the Node could not be read.
func Wait(ctx context.Context, nodes typedcorev1.NodeInterface, name string, poll time.Duration) (*corev1.Node, error) {
	for {
		n, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err == nil && Ready(n) {
			return n, nil
		}
		last := fmt.Sprint(err)
		if err == nil {
			last = "no Ready condition yet"
			if c := Condition(n); c != nil {
				last = fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s not Ready: %w (last seen: %s)", name, ctx.Err(), last)
		case <-time.After(poll):
		}
	}
}
