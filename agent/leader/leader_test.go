package leader

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A term ends three ways: the work fails (its error, the lease given up), the caller's context ends (nil, the
// lease released: no holder), or a candidate never leads before the context ends (nil, the work never run). The
// real election against an apiserver is run by the load balancer's and the provisioner's tests.
func TestTerms(t *testing.T) {
	cs := fake.NewClientset()
	e := Election{Client: cs.CoordinationV1(), Namespace: "kube-system", Name: "test", Identity: "a",
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}
	failed := errors.New("the work failed")
	if err := Run(context.Background(), e, func(context.Context) error { return failed }); !errors.Is(err, failed) {
		t.Errorf("a failed term: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	leading := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, e, func(ctx context.Context) error {
			close(leading)
			<-ctx.Done()
			return nil
		})
	}()
	<-leading
	cancel()
	if err := <-done; err != nil {
		t.Errorf("a term whose context ended: %v", err)
	}
	lease, err := cs.CoordinationV1().Leases("kube-system").Get(context.Background(), "test", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
		t.Errorf("the lease after the term: %v %v", lease, err)
	}

	// Another holds the lease (renewing it every 100 ms, 2 s long): b, asking for 500 ms, cannot lead in that time
	// whatever the machine's load, and returns when its context ends.
	held := e
	held.Identity = "holder"
	hctx, hcancel := context.WithCancel(context.Background())
	defer hcancel()
	hleading := make(chan struct{})
	go Run(hctx, held, func(ctx context.Context) error { close(hleading); <-ctx.Done(); return nil })
	<-hleading
	b := e
	b.Identity = "b"
	bctx, bcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer bcancel()
	ran := false
	if err := Run(bctx, b, func(context.Context) error { ran = true; return nil }); err != nil || ran {
		t.Errorf("a candidate that never led: %v, work ran %v", err, ran)
	}
}

// Missing fields are named, all at once.
func TestElectionNeedsItsFields(t *testing.T) {
	err := Run(context.Background(), Election{}, func(context.Context) error { return nil })
	for _, want := range []string{"Client: required", "Namespace and Name: required", "Identity: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: want %q", err, want)
		}
	}
}
