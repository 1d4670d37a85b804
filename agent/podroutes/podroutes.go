// Package podroutes programs pod networking between nodes the classic AKS kubenet way: for every other Node that
// has a podCIDR and an InternalIP, a route to the podCIDR via that InternalIP; when a Node goes, or moves, its
// route goes or moves with it. The controller watches Nodes with the node's own credentials (the Node authorizer
// lets a node list and watch Nodes).
//
// The routes carry berth's own routing protocol number (Protocol), so the controller lists exactly the routes it
// made, also after a restart, removes those no Node wants any more, and never touches anyone else's routes.
package podroutes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"berth.dev/berth/agent/nodeready"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Protocol marks berth's routes (rtnetlink's rtm_protocol; `ip route` shows it as "proto 98").
const Protocol = netlink.RouteProtocol(98)

// Route is one pod route: Dst (a Node's podCIDR) via Via (that Node's InternalIP).
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Via.String() }

// Desired is the routes this node (self) needs: one per other Node with a podCIDR and an InternalIP of the same
// family, sorted. A Node without either is skipped (not yet allocated, not yet reported), and so is a lost Node:
// one whose Ready condition is Unknown, the node lifecycle controller's mark for a kubelet that stopped
// reporting. Its pods are unreachable anyway; its route comes back when it reports again. A Node that reports
// NotReady keeps its route (its kubelet runs, and so may its pods).
func Desired(self string, nodes []*corev1.Node) []Route {
	var out []Route
	for _, n := range nodes {
		if n.Name == self || nodeready.Lost(n) {
			continue
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		for _, c := range cidrs {
			dst, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			for _, a := range n.Status.Addresses {
				via, err := netip.ParseAddr(a.Address)
				if a.Type == corev1.NodeInternalIP && err == nil && via.Is4() == dst.Addr().Is4() {
					out = append(out, Route{Dst: dst.Masked(), Via: via})
					break
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	return out
}

// Table is where routes live: the kernel's main table through netlink (Netlink), or a fake in unit tests.
type Table interface {
	// List returns the routes with Protocol.
	List() ([]Route, error)
	// Replace adds r, replacing a route to the same Dst.
	Replace(r Route) error
	Delete(r Route) error
}

// Sync makes the table's berth routes equal want: it replaces what is missing or different and deletes the rest.
// It returns what it changed; on errors it carries on with the other routes and returns them all joined.
func Sync(t Table, want []Route) (added, removed []Route, err error) {
	have, err := t.List()
	if err != nil {
		return nil, nil, fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, r := range want {
		if slices.Contains(have, r) {
			continue
		}
		if err := t.Replace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", r, err))
			continue
		}
		added = append(added, r)
	}
	for _, r := range have {
		if slices.ContainsFunc(want, func(w Route) bool { return w.Dst == r.Dst }) {
			continue // replaced above if its gateway changed
		}
		if err := t.Delete(r); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r, err))
			continue
		}
		removed = append(removed, r)
	}
	return added, removed, errors.Join(errs...)
}

// Netlink is the main routing table through a netlink handle (netlink.Handle{} is this network namespace; tests
// pass a handle opened in theirs).
type Netlink struct{ Handle *netlink.Handle }

func (n Netlink) List() ([]Route, error) {
	rs, err := n.Handle.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: Protocol, Table: 254}, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	var out []Route
	for _, r := range rs {
		if r.Dst == nil || r.Gw == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		dst, ok1 := netip.AddrFromSlice(r.Dst.IP)
		via, ok2 := netip.AddrFromSlice(r.Gw)
		if ok1 && ok2 {
			out = append(out, Route{Dst: netip.PrefixFrom(dst.Unmap(), ones), Via: via.Unmap()})
		}
	}
	return out, nil
}

func (n Netlink) route(r Route) *netlink.Route {
	return &netlink.Route{Dst: &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())},
		Gw: r.Via.AsSlice(), Protocol: Protocol, Table: 254}
}

func (n Netlink) Replace(r Route) error { return n.Handle.RouteReplace(n.route(r)) }
func (n Netlink) Delete(r Route) error  { return n.Handle.RouteDel(n.route(r)) }

// Config is what Run needs.
type Config struct {
	Client   kubernetes.Interface
	NodeName string // this node: no route to its own podCIDR
	Table    Table
	// Resync re-lists Nodes and re-syncs the routes this often (a route deleted by hand comes back). Default 1 min.
	Resync time.Duration
	Log    *slog.Logger
}

// Run keeps the routes in sync with the Nodes until ctx ends. A failed sync is logged and retried with backoff.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Resync == 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	factory := informers.NewSharedInformerFactory(cfg.Client, cfg.Resync)
	nodes := factory.Core().V1().Nodes()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	enqueue := func(any) { queue.Add("sync") } // one key: every change re-syncs the whole (small) table
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, _ any) { enqueue(nil) }, DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nodes.Informer().HasSynced) {
		return ctx.Err()
	}
	queue.Add("sync")
	go func() { <-ctx.Done(); queue.ShutDown() }()
	for {
		key, quit := queue.Get()
		if quit {
			return nil
		}
		all, err := nodes.Lister().List(labels.Everything())
		if err == nil {
			var added, removed []Route
			added, removed, err = Sync(cfg.Table, Desired(cfg.NodeName, all))
			for _, r := range added {
				cfg.Log.Info("pod route added", "route", r.String())
			}
			for _, r := range removed {
				cfg.Log.Info("pod route removed", "route", r.String())
			}
		}
		if err != nil {
			cfg.Log.Warn("pod routes not in sync; retrying", "err", err)
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
}
