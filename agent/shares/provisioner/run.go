package provisioner

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"berth.dev/berth/agent/leader"
)

// Driver is one CSI driver to provision for: its name (the StorageClasses' provisioner) and its Controller
// service, called in process.
type Driver struct {
	Name       string
	Controller csi.ControllerServer
}

// Config is what Run needs.
type Config struct {
	Client  kubernetes.Interface
	Drivers []Driver
	// Election is the lease every driver's provisioning runs under (one leader provisions for all of them); its
	// Client is Client's when unset.
	Election leader.Election
	// Resync is how often every claim and volume is looked at again besides their changes (default 15 minutes,
	// the library's).
	Resync time.Duration
	Log    *slog.Logger
}

// Run provisions and deletes the drivers' volumes while it holds the lease, until ctx ends (nil) or the lease is
// lost (leader.ErrLost: the caller exits and its supervisor starts a new candidate). Each driver gets the
// library's controller (claims, volumes and classes watched; failed provisioning retried with backoff and
// reported as Events on the claim), with its own election off: the lease is Run's.
func Run(ctx context.Context, cfg Config) error {
	var errs []error
	if cfg.Client == nil {
		errs = append(errs, errors.New("provisioner: Client: required"))
	}
	if len(cfg.Drivers) == 0 {
		errs = append(errs, errors.New("provisioner: Drivers: at least one is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync == 0 {
		cfg.Resync = controller.DefaultResyncPeriod
	}
	if cfg.Election.Client == nil {
		cfg.Election.Client = cfg.Client.CoordinationV1()
	}
	if cfg.Election.Log == nil {
		cfg.Election.Log = cfg.Log
	}
	return leader.Run(ctx, cfg.Election, func(ctx context.Context) error {
		// The library logs through klog's contextual logger: this one writes to cfg.Log.
		ctx = klog.NewContext(ctx, logr.FromSlogHandler(cfg.Log.Handler()))
		done := make(chan struct{}, len(cfg.Drivers))
		for _, d := range cfg.Drivers {
			p := Provisioner{Driver: d.Name, Controller: d.Controller, Secrets: cfg.Client.CoreV1()}
			c := controller.NewProvisionController(ctx, cfg.Client, d.Name, p,
				controller.LeaderElection(false), controller.ResyncPeriod(cfg.Resync))
			go func() {
				c.Run(ctx)
				done <- struct{}{}
			}()
		}
		for range cfg.Drivers {
			<-done
		}
		return nil
	})
}

// LeaseName is the Lease the provisioner's candidates elect their leader with.
const LeaseName = "berth-shares-provisioner"
