// Package leader runs work only while this process holds a Lease (client-go's leader election), for the agent's
// cluster-wide controllers: the load balancer's controller and the share drivers' provisioner. A term ends when
// the work returns, when the lease is lost or when the caller's context ends; the lease is released on the way
// out, so a candidate that is stopped hands over at once instead of after the lease's duration.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1 "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// ErrLost is returned when the lease was lost while the work ran: the caller exits, and its supervisor starts a
// new candidate (as kube-controller-manager does).
var ErrLost = errors.New("lost the lease")

// Election is a Lease and this candidate's identity in it.
type Election struct {
	Client coordinationv1.LeasesGetter
	// Namespace and Name are the Lease's; Identity is this candidate's (unique among the candidates).
	Namespace, Name, Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election (defaults 15 s, 10 s, 2 s, as
	// kube-controller-manager's).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

func (e *Election) setDefaults() error {
	var errs []error
	if e.Client == nil {
		errs = append(errs, errors.New("leader election: Client: required"))
	}
	if e.Namespace == "" || e.Name == "" {
		errs = append(errs, errors.New("leader election: Namespace and Name: required"))
	}
	if e.Identity == "" {
		errs = append(errs, errors.New("leader election: Identity: required"))
	}
	if e.LeaseDuration == 0 {
		e.LeaseDuration, e.RenewDeadline, e.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	if e.Log == nil {
		e.Log = slog.Default()
	}
	return errors.Join(errs...)
}

// Run campaigns for the lease and, once it leads, runs work with a context that ends with the term. It returns
// nil when ctx ends (leading or not), work's error when work fails (the lease given up), and ErrLost when the
// lease was lost while work ran.
func Run(ctx context.Context, e Election, work func(context.Context) error) error {
	if err := e.setDefaults(); err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name},
		Client:     e.Client,
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
	}
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	started, led := make(chan struct{}), make(chan error, 1)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, LeaseDuration: e.LeaseDuration, RenewDeadline: e.RenewDeadline, RetryPeriod: e.RetryPeriod,
		ReleaseOnCancel: true, Name: e.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				close(started)
				e.Log.Info("leading", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity)
				err := work(lctx)
				stop() // a term that ends on its own (an error) gives the lease up
				led <- err
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election %s/%s: %w", e.Namespace, e.Name, err)
	}
	le.Run(ectx) // returns once leadership is lost or ectx ends; the term's context is cancelled then
	select {
	case <-started:
	default:
		return nil // ctx ended before this candidate led
	}
	err = <-led
	switch {
	case err != nil:
		return err
	case ctx.Err() != nil:
		return nil
	}
	return fmt.Errorf("lease %s/%s: %w", e.Namespace, e.Name, ErrLost)
}
