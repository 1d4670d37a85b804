package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

const (
	// HostLabel marks the LB hosts' Leases.
	HostLabel = "lb.berth.dev/host"
	// LeasePrefix starts each LB host's Lease name; the host's identity follows.
	LeasePrefix = "berth-lb-host-"
)

// MembersConfig is the membership's input.
type MembersConfig struct {
	Client kubernetes.Interface
	// Namespace of the Leases (default kube-system); Identity is this host's (a DNS label: its Lease is
	// berth-lb-host-<identity>).
	Namespace, Identity string
	// LeaseDuration is how long a host counts as live after its last renewal as this host saw it (default 3 s);
	// RenewPeriod how often this host renews its own (default 1 s).
	LeaseDuration, RenewPeriod time.Duration
	// Changed is called when the live set changes.
	Changed func()
	Log     *slog.Logger
}

// Members keeps this host's Lease renewed and tells which LB hosts are live. A host is live while its Lease's
// renewTime keeps changing, as this host observes it: liveness is measured on this host's clock only, so the
// hosts' clocks need not agree (client-go's leader election does the same). This host always counts itself live:
// when the API cannot be reached, every host keeps announcing what it owns, and may announce more, which is
// harmless because every host picks the same node for the same flow.
type Members struct {
	cfg  MembersConfig
	mu   sync.Mutex
	seen map[string]observed
	live []string
}

type observed struct {
	renew    time.Time
	duration time.Duration
	at       time.Time
}

// NewMembers checks cfg and fills in its defaults.
func NewMembers(cfg MembersConfig) (*Members, error) {
	if cfg.Client == nil {
		return nil, errors.New("announce: Client is required")
	}
	if msgs := validation.IsDNS1123Label(cfg.Identity); len(msgs) > 0 {
		return nil, fmt.Errorf("announce: identity %q: %v", cfg.Identity, msgs)
	}
	if cfg.Namespace == "" {
		cfg.Namespace = metav1.NamespaceSystem
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = 3 * time.Second
	}
	if cfg.RenewPeriod == 0 {
		cfg.RenewPeriod = time.Second
	}
	if cfg.RenewPeriod >= cfg.LeaseDuration {
		return nil, fmt.Errorf("announce: renew period %s is not shorter than the lease duration %s", cfg.RenewPeriod, cfg.LeaseDuration)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Changed == nil {
		cfg.Changed = func() {}
	}
	return &Members{cfg: cfg, seen: map[string]observed{}, live: []string{cfg.Identity}}, nil
}

// Identity is this host's.
func (m *Members) Identity() string { return m.cfg.Identity }

// Live is the live hosts' identities, sorted; this host's among them.
func (m *Members) Live() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.live)
}

// Run renews this host's Lease and follows the others' until ctx ends; then it deletes its Lease, so that the
// others take its frontend IPs over at once rather than after the lease duration.
func (m *Members) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(m.cfg.Client, 0, informers.WithNamespace(m.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = HostLabel }))
	leases := factory.Coordination().V1().Leases()
	poke := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case poke <- struct{}{}:
		default:
		}
	}
	if _, err := leases.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: notify,
		UpdateFunc: func(_, o any) { notify(o) }, DeleteFunc: notify}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	renew := time.NewTicker(m.cfg.RenewPeriod)
	defer renew.Stop()
	check := time.NewTicker(m.cfg.RenewPeriod / 4)
	defer check.Stop()
	var own *coordinationv1.Lease
	own = m.renew(ctx, own)
	for {
		select {
		case <-ctx.Done():
			m.release(own)
			return nil
		case <-renew.C:
			own = m.renew(ctx, own)
		case <-poke:
		case <-check.C:
		}
		if leases.Informer().HasSynced() {
			all, _ := leases.Lister().List(labels.Everything())
			m.observe(all, time.Now())
		}
	}
}

// renew writes this host's Lease (created if missing) with renewTime now; a failure is logged and retried at the
// next period.
func (m *Members) renew(ctx context.Context, own *coordinationv1.Lease) *coordinationv1.Lease {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RenewPeriod)
	defer cancel()
	leases := m.cfg.Client.CoordinationV1().Leases(m.cfg.Namespace)
	now := metav1.NewMicroTime(time.Now())
	seconds := int32((m.cfg.LeaseDuration + time.Second - 1) / time.Second)
	if own == nil {
		l, err := leases.Get(ctx, LeasePrefix+m.cfg.Identity, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeasePrefix + m.cfg.Identity, Namespace: m.cfg.Namespace,
				Labels: map[string]string{HostLabel: "true"}}}
			l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.AcquireTime, l.Spec.RenewTime = &m.cfg.Identity, &seconds, &now, &now
			created, err := leases.Create(ctx, l, metav1.CreateOptions{})
			if err != nil {
				m.cfg.Log.Warn("cannot create this LB host's lease; retrying", "err", err)
				return nil
			}
			return created
		}
		if err != nil {
			m.cfg.Log.Warn("cannot read this LB host's lease; retrying", "err", err)
			return nil
		}
		own = l
	}
	l := own.DeepCopy()
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &m.cfg.Identity, &seconds, &now
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[HostLabel] = "true"
	updated, err := leases.Update(ctx, l, metav1.UpdateOptions{})
	if err != nil {
		m.cfg.Log.Warn("cannot renew this LB host's lease; retrying", "err", err)
		return nil // read it again next time (a conflict, or deleted by hand)
	}
	return updated
}

func (m *Members) release(own *coordinationv1.Lease) {
	if own == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := m.cfg.Client.CoordinationV1().Leases(m.cfg.Namespace).Delete(ctx, own.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &own.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		m.cfg.Log.Warn("cannot delete this LB host's lease; the others take over when it expires", "err", err)
	}
}

// observe updates the live set from the Leases seen at now, and calls Changed when it changed.
func (m *Members) observe(all []*coordinationv1.Lease, now time.Time) {
	m.mu.Lock()
	present := map[string]bool{}
	for _, l := range all {
		id := l.Spec.HolderIdentity
		if id == nil || *id == "" || l.Name != LeasePrefix+*id || l.Spec.RenewTime == nil {
			continue
		}
		d := m.cfg.LeaseDuration
		if l.Spec.LeaseDurationSeconds != nil && *l.Spec.LeaseDurationSeconds > 0 {
			d = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
		}
		present[*id] = true
		if o, ok := m.seen[*id]; !ok || !o.renew.Equal(l.Spec.RenewTime.Time) {
			m.seen[*id] = observed{renew: l.Spec.RenewTime.Time, duration: d, at: now}
		}
	}
	live := []string{m.cfg.Identity}
	for id, o := range m.seen {
		if !present[id] {
			delete(m.seen, id)
			continue
		}
		if id != m.cfg.Identity && now.Sub(o.at) < o.duration {
			live = append(live, id)
		}
	}
	slices.Sort(live)
	changed := !slices.Equal(live, m.live)
	m.live = live
	m.mu.Unlock()
	if changed {
		m.cfg.Log.Info("live LB hosts", "hosts", live)
		m.cfg.Changed()
	}
}
