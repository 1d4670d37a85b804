// Package controller is the shared load balancer's controller, the part a cloud provider's service controller plays
// on AKS: it watches Services of type LoadBalancer of berth's class, gives each one frontend IP from the configured
// pools (ipam), and writes it to status.loadBalancer.ingress (ipMode VIP, kube-proxy on the nodes accepts it; Proxy for the DNAT mode). It
// releases the IP when the Service goes or stops being a LoadBalancer, and reports what it could not do (a pool
// run out, an address another Service holds, a bad annotation) as an Event and as the Service's
// FrontendIPAllocated condition. It runs leader-elected through a Lease; a new leader restores every address from
// the Services' status before it assigns any, so a restart or failover never hands a live address to another
// Service.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"berth.dev/berth/agent/lb/ipam"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/leader"
)

const (
	// ConditionType is the Service condition the controller maintains.
	ConditionType = "berth.dev/FrontendIPAllocated"
	// Component names the controller in Events and as the Lease's holder prefix.
	Component = "berth-lb-controller"
	// ReasonInvalidAnnotation: an annotation of the Service could not be read.
	ReasonInvalidAnnotation = "InvalidAnnotation"
	// ReasonAllocated: the Service has its frontend IP.
	ReasonAllocated = "Allocated"
	// ReasonIPFamilyNotSupported: the Service is IPv6 only; frontends are IPv4.
	ReasonIPFamilyNotSupported = "IPFamilyNotSupported"
	// PortsConditionType is False, with ReasonPortNotServed, while the LB hosts cannot serve part of a Service that
	// has its frontend IP (a port of an unsupported protocol, a port without a nodePort in DNAT mode, a source range
	// that is not a CIDR); it is absent otherwise.
	PortsConditionType  = "berth.dev/LoadBalancerPortsServed"
	ReasonPortNotServed = "PortNotServed"
)

// Config is the controller's input.
type Config struct {
	Client kubernetes.Interface
	// ClassName is the spec.loadBalancerClass it serves; DefaultClass: also Services without one.
	ClassName    string
	DefaultClass bool
	Pools        []ipam.Pool
	// PoolAnnotation and AddressAnnotation are the annotations a Service asks with.
	PoolAnnotation, AddressAnnotation string
	// IPMode is written with each frontend IP (default VIP, for the LB hosts' floating-IP mode; Proxy for their
	// DNAT mode, so that kube-proxy does not short-circuit in-cluster traffic to the frontend IP).
	IPMode corev1.LoadBalancerIPMode
	// Lease is where the leader election happens (default kube-system/berth-lb-controller); Identity is this
	// controller's (default the hostname and a random suffix, by the caller).
	LeaseNamespace, LeaseName, Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election (defaults 15 s, 10 s, 2 s, as
	// kube-controller-manager's).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.LeaseNamespace == "" {
		c.LeaseNamespace = metav1.NamespaceSystem
	}
	if c.LeaseName == "" {
		c.LeaseName = Component
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.IPMode == "" {
		c.IPMode = corev1.LoadBalancerIPModeVIP
	}
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("controller: Client: required"))
	}
	if c.ClassName == "" {
		errs = append(errs, errors.New("controller: ClassName: required"))
	}
	if c.Identity == "" {
		errs = append(errs, errors.New("controller: Identity: required"))
	}
	return errors.Join(errs...)
}

// Run campaigns for the Lease and, while it leads, runs the controller. It returns nil when ctx ends, and an error
// when it loses the lease (the caller exits, and its supervisor starts a new candidate).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	return leader.Run(ctx, leader.Election{Client: cfg.Client.CoordinationV1(), Namespace: cfg.LeaseNamespace, Name: cfg.LeaseName,
		Identity: cfg.Identity, LeaseDuration: cfg.LeaseDuration, RenewDeadline: cfg.RenewDeadline, RetryPeriod: cfg.RetryPeriod, Log: cfg.Log},
		func(ctx context.Context) error { return lead(ctx, cfg) })
}

// controller is one leadership term's state.
type controller struct {
	cfg      Config
	alloc    *ipam.Allocator
	services corelisters.ServiceLister
	queue    workqueue.TypedRateLimitingInterface[string]
	client   typedcorev1.CoreV1Interface
	events   record.EventRecorder
	// waiting are the Services refused for want of a free address (exhausted, or the one asked for is held):
	// every release enqueues them again.
	waiting map[string]bool
}

// lead runs the controller until ctx ends: informer, restore, then the work queue (one worker: the allocator is
// plain state).
func lead(ctx context.Context, cfg Config) error {
	factory := informers.NewSharedInformerFactory(cfg.Client, 0)
	svcInformer := factory.Core().V1().Services()
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cfg.Client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	c := &controller{
		cfg:      cfg,
		alloc:    ipam.New(cfg.Pools),
		services: svcInformer.Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: Component}),
		client:  cfg.Client.CoreV1(),
		events:  broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component}),
		waiting: map[string]bool{},
	}
	defer c.queue.ShutDown()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	if _, err := svcInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcInformer.Informer().HasSynced) {
		return nil // the term ended first
	}
	if err := c.restore(); err != nil {
		return err
	}
	go wait.UntilWithContext(ctx, c.work, time.Second)
	<-ctx.Done()
	return nil
}

// restore records every address the Services' status holds, oldest Service first (the older keeps a contested
// address), before anything is assigned.
func (c *controller) restore() error {
	all, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	slices.SortFunc(all, func(a, b *corev1.Service) int {
		if d := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); d != 0 {
			return d
		}
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	restored := 0
	for _, svc := range all {
		if !c.ours(svc) {
			continue
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			addr, err := netip.ParseAddr(in.IP)
			if err != nil {
				continue
			}
			if _, err := c.alloc.Restore(key(svc), addr); err != nil {
				c.cfg.Log.Warn("address in a Service's status not restored; the Service gets another", "service", key(svc), "err", err)
				continue
			}
			restored++
			break
		}
	}
	c.cfg.Log.Info("restored frontend IPs from the Services' status", "count", restored)
	return nil
}

func (c *controller) work(ctx context.Context) {
	for {
		k, quit := c.queue.Get()
		if quit {
			return
		}
		err := c.sync(ctx, k)
		if err != nil {
			c.cfg.Log.Warn("sync failed; retrying", "service", k, "err", err)
			c.queue.AddRateLimited(k)
		} else {
			c.queue.Forget(k)
		}
		c.queue.Done(k)
	}
}

func key(svc *corev1.Service) string { return lbsvc.Key(svc) }

// ours reports whether svc is a LoadBalancer Service of the controller's class.
func (c *controller) ours(svc *corev1.Service) bool {
	return lbsvc.Class{Name: c.cfg.ClassName, Default: c.cfg.DefaultClass}.Serves(svc)
}

// sync brings one Service's frontend IP and status in line with what it asks.
func (c *controller) sync(ctx context.Context, k string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(k)
	if err != nil {
		return nil
	}
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		delete(c.waiting, k)
		if as, held := c.alloc.Get(k); held {
			c.release(k)
			c.cfg.Log.Info("frontend IP released: the Service is gone", "service", k, "ip", as.Address)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !c.ours(svc) {
		return c.drop(ctx, svc)
	}
	if msg := ipv4Missing(svc); msg != "" {
		if _, held := c.alloc.Get(k); held {
			c.release(k) // it changed to IPv6 only: an IPv4 frontend no longer serves it
		}
		return c.refuse(ctx, svc, ReasonIPFamilyNotSupported, msg)
	}
	req, err := c.request(svc)
	if err != nil {
		return c.refuse(ctx, svc, ReasonInvalidAnnotation, err.Error())
	}
	before, had := c.alloc.Get(k)
	as, err := c.alloc.Assign(k, req)
	var ie *ipam.Error
	if errors.As(err, &ie) {
		if ie.Reason == ipam.PoolExhausted || ie.Reason == ipam.AddressInUse {
			c.waiting[k] = true
		}
		return c.refuse(ctx, svc, string(ie.Reason), ie.Message)
	}
	if err != nil {
		return err
	}
	delete(c.waiting, k)
	if had && before != as {
		c.freed() // it moved: its old address is free
	}
	if !had || before != as {
		c.events.Eventf(svc, corev1.EventTypeNormal, "FrontendIPAllocated", "frontend IP %s from pool %s", as.Address, as.Pool)
		c.cfg.Log.Info("frontend IP allocated", "service", k, "ip", as.Address, "pool", as.Pool)
	}
	mode := c.cfg.IPMode
	ingress := []corev1.LoadBalancerIngress{{IP: as.Address.String(), IPMode: &mode}}
	cond := metav1.Condition{Type: ConditionType, Status: metav1.ConditionTrue, Reason: ReasonAllocated,
		Message: fmt.Sprintf("frontend IP %s from pool %s", as.Address, as.Pool), ObservedGeneration: svc.Generation}
	var ports *metav1.Condition
	if problems := lbsvc.Problems(svc, mode == corev1.LoadBalancerIPModeProxy); len(problems) > 0 {
		msg := strings.Join(problems, "; ")
		ports = &metav1.Condition{Type: PortsConditionType, Status: metav1.ConditionFalse, Reason: ReasonPortNotServed,
			Message: msg, ObservedGeneration: svc.Generation}
		if cur := meta.FindStatusCondition(svc.Status.Conditions, PortsConditionType); cur == nil || cur.Message != msg {
			c.events.Event(svc, corev1.EventTypeWarning, ReasonPortNotServed, msg)
			c.cfg.Log.Warn("part of a Service is not served", "service", k, "detail", msg)
		}
	}
	return c.writeStatus(ctx, svc, ingress, &cond, ports)
}

// ipv4Missing says why a Service that has no IPv4 family cannot get a frontend (frontends are IPv4; a dual-stack
// Service gets an IPv4 one), or "" when it has one. The apiserver fills spec.ipFamilies in; a Service without
// them (an old object, or a headless one) is served as IPv4.
func ipv4Missing(svc *corev1.Service) string {
	if len(svc.Spec.IPFamilies) == 0 || slices.Contains(svc.Spec.IPFamilies, corev1.IPv4Protocol) {
		return ""
	}
	fams := make([]string, len(svc.Spec.IPFamilies))
	for i, f := range svc.Spec.IPFamilies {
		fams[i] = string(f)
	}
	return fmt.Sprintf("spec.ipFamilies: [%s]: only IPv4 frontends are supported (ask for IPv4, or a dual-stack policy)", strings.Join(fams, ", "))
}

// request reads what the Service asks for: an address (annotation or spec.loadBalancerIP; if both, they agree)
// and a pool (annotation).
func (c *controller) request(svc *corev1.Service) (ipam.Request, error) {
	var req ipam.Request
	var asked []string
	if v, ok := svc.Annotations[c.cfg.AddressAnnotation]; ok {
		asked = append(asked, v)
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil || !a.Is4() {
			return req, fmt.Errorf("annotation %s: %q is not an IPv4 address", c.cfg.AddressAnnotation, cut(v))
		}
		req.Address = a
	}
	if v := svc.Spec.LoadBalancerIP; v != "" {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return req, fmt.Errorf("spec.loadBalancerIP: %q is not an IPv4 address", cut(v))
		}
		if req.Address.IsValid() && req.Address != a {
			return req, fmt.Errorf("annotation %s (%s) and spec.loadBalancerIP (%s) disagree", c.cfg.AddressAnnotation, cut(asked[0]), v)
		}
		req.Address = a
	}
	if v, ok := svc.Annotations[c.cfg.PoolAnnotation]; ok {
		if v == "" {
			return req, fmt.Errorf("annotation %s is empty", c.cfg.PoolAnnotation)
		}
		req.Pool = v
	}
	return req, nil
}

func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// refuse reports why the Service has no (new) frontend IP: a Warning Event and the condition False. An address it
// already held stays in its status (a failed change keeps what the Service had).
func (c *controller) refuse(ctx context.Context, svc *corev1.Service, reason, msg string) error {
	cur := meta.FindStatusCondition(svc.Status.Conditions, ConditionType)
	if cur == nil || cur.Status != metav1.ConditionFalse || cur.Reason != reason || cur.Message != msg {
		c.events.Event(svc, corev1.EventTypeWarning, reason, msg)
		c.cfg.Log.Warn("no frontend IP for a Service", "service", key(svc), "reason", reason, "detail", msg)
	}
	ingress := svc.Status.LoadBalancer.Ingress
	if _, held := c.alloc.Get(key(svc)); !held {
		ingress = nil
	}
	cond := metav1.Condition{Type: ConditionType, Status: metav1.ConditionFalse, Reason: reason, Message: msg, ObservedGeneration: svc.Generation}
	return c.writeStatus(ctx, svc, ingress, &cond, nil)
}

// drop releases the address of a Service that is no longer a LoadBalancer of this class and clears its status, as
// the cloud provider's service controller does; a Service of another class is left to its own controller.
func (c *controller) drop(ctx context.Context, svc *corev1.Service) error {
	delete(c.waiting, key(svc))
	as, held := c.alloc.Get(key(svc))
	if held {
		c.release(key(svc))
		c.events.Eventf(svc, corev1.EventTypeNormal, "FrontendIPReleased", "frontend IP %s released", as.Address)
		c.cfg.Log.Info("frontend IP released: no longer a LoadBalancer of this class", "service", key(svc), "ip", as.Address)
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		return nil // another class: its status is its controller's
	}
	if !held && meta.FindStatusCondition(svc.Status.Conditions, ConditionType) == nil && meta.FindStatusCondition(svc.Status.Conditions, PortsConditionType) == nil {
		return nil
	}
	return c.writeStatus(ctx, svc, nil, nil, nil)
}

// release frees what k holds and gives the Services waiting for an address another try.
func (c *controller) release(k string) {
	c.alloc.Release(k)
	c.freed()
}

func (c *controller) freed() {
	for w := range c.waiting {
		c.queue.Add(w)
	}
}

// writeStatus sets the Service's ingress, its allocation condition (nil: removed) and its ports condition (nil:
// removed), writing only when something changed.
func (c *controller) writeStatus(ctx context.Context, svc *corev1.Service, ingress []corev1.LoadBalancerIngress, cond, ports *metav1.Condition) error {
	out := svc.DeepCopy()
	out.Status.LoadBalancer.Ingress = ingress
	for _, c := range []struct {
		typ  string
		cond *metav1.Condition
	}{{ConditionType, cond}, {PortsConditionType, ports}} {
		if c.cond == nil {
			meta.RemoveStatusCondition(&out.Status.Conditions, c.typ)
		} else {
			meta.SetStatusCondition(&out.Status.Conditions, *c.cond)
		}
	}
	if equalStatus(svc.Status, out.Status) {
		return nil
	}
	_, err := c.client.Services(svc.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: Component})
	if err != nil {
		return fmt.Errorf("update status of %s: %w", key(svc), err)
	}
	return nil
}

func equalStatus(a, b corev1.ServiceStatus) bool {
	if len(a.LoadBalancer.Ingress) != len(b.LoadBalancer.Ingress) || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.LoadBalancer.Ingress {
		x, y := a.LoadBalancer.Ingress[i], b.LoadBalancer.Ingress[i]
		if x.IP != y.IP || (x.IPMode == nil) != (y.IPMode == nil) || (x.IPMode != nil && *x.IPMode != *y.IPMode) {
			return false
		}
	}
	for i := range a.Conditions {
		x, y := a.Conditions[i], b.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	return true
}
