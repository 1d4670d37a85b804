// Package host is the LB host role of the agent (`berth-agent lb host`): it watches Services, Nodes and
// EndpointSlices, turns them into frontends (package frontends) and keeps berth's nftables table on this host in
// line (package dataplane): after every change (a burst of changes is one apply) and on a periodic resync, which
// also repairs drift, such as a rule deleted by hand.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"berth.dev/berth/agent/lb/announce"
	"berth.dev/berth/agent/lb/dataplane"
	"berth.dev/berth/agent/lb/frontends"
	"berth.dev/berth/agent/lb/lbmetrics"
	"berth.dev/berth/agent/lb/lbstatus"
	"berth.dev/berth/agent/lb/lbsvc"
	"berth.dev/berth/agent/lb/maglev"
	"berth.dev/berth/agent/lb/probe"
)

// Config is the role's input.
type Config struct {
	Client kubernetes.Interface
	Class  lbsvc.Class
	// NFT is the nftables connection (dataplane.Open), in the namespace the host's table lives in.
	NFT *nftables.Conn
	// Mode is the data plane's (default floating IP, which needs Routes: a netlink handle in the same namespace,
	// for the policy routing to the nodes; in DNAT mode Routes, if set, is cleared of berth's rules and routes).
	Mode   dataplane.Mode
	Routes *netlink.Handle
	// Resync is the period of the full re-apply (default 30 s); Debounce gathers a burst of changes (default 100 ms).
	Resync, Debounce time.Duration
	// Applied, if set, is called after each apply with what was applied (tests and status wait on it).
	Applied func([]dataplane.Frontend)
	// Probe tunes the health probes (kube-proxy's /healthz on every node, each Local Service's
	// healthCheckNodePort); its Changed is set by Run. KubeProxyHealthPort is kube-proxy's healthz port (10256).
	// Announce, if set, announces the frontend IPs this host owns among the live LB hosts (package announce); Run
	// runs it.
	Announce            *announce.Announcer
	Probe               probe.Config
	KubeProxyHealthPort int
	// Identity names this host in its status; StatusFile, if set, is where the status is written (package
	// lbstatus); Metrics, if set, are kept up to date.
	Identity   string
	StatusFile string
	Metrics    *lbmetrics.Metrics
	Log        *slog.Logger
}

// Run keeps the table in line until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Mode == "" {
		cfg.Mode = dataplane.FloatingIP
	}
	if cfg.Client == nil || cfg.NFT == nil || (cfg.Mode == dataplane.FloatingIP && cfg.Routes == nil) {
		return errors.New("host: Client, NFT and (floating IP) Routes are required")
	}
	// The nodes' marks in floating-IP mode: read back from the kernel, so that a restarted host keeps the marks
	// the established flows' conntrack entries hold.
	var marks *dataplane.Marks
	if cfg.Mode == dataplane.FloatingIP {
		m, err := dataplane.ReadMarks(cfg.Routes)
		if err != nil {
			return fmt.Errorf("host: %w", err)
		}
		marks = m
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.KubeProxyHealthPort == 0 {
		cfg.KubeProxyHealthPort = 10256
	}
	factory := informers.NewSharedInformerFactory(cfg.Client, 0)
	services, nodes := factory.Core().V1().Services(), factory.Core().V1().Nodes()
	slices := factory.Discovery().V1().EndpointSlices()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}
	for _, inf := range []cache.SharedIndexInformer{services.Informer(), nodes.Informer(), slices.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), services.Informer().HasSynced, nodes.Informer().HasSynced, slices.Informer().HasSynced) {
		return nil
	}
	rep := &reporter{file: cfg.StatusFile, metrics: cfg.Metrics, announce: cfg.Announce, log: cfg.Log,
		st: lbstatus.Status{Identity: cfg.Identity, Mode: string(cfg.Mode)}}
	probeCfg := cfg.Probe
	probeCfg.Changed = func() { poke(nil) }
	if cfg.Metrics != nil {
		probeCfg.Result = cfg.Metrics.Probed
	}
	if probeCfg.Log == nil {
		probeCfg.Log = cfg.Log
	}
	prober := probe.New(ctx, probeCfg)
	if cfg.Announce != nil {
		cfg.Announce.OnChange(rep.announced)
		done := make(chan error, 1)
		go func() { done <- cfg.Announce.Run(ctx) }()
		defer func() {
			if err := <-done; err != nil {
				cfg.Log.Error("announcer", "err", err)
			}
		}()
	}
	var prev *dataplane.Table // what the table holds, if the last apply succeeded
	// What the policy routing holds (nil in DNAT mode: none of berth's), if routesOK: the last ApplyRoutes succeeded.
	var routed *dataplane.Marks
	routesOK := false
	apply := func(why string) {
		svcs, _ := services.Lister().List(labels.Everything())
		ns, _ := nodes.Lister().List(labels.Everything())
		eps, _ := slices.Lister().List(labels.Everything())
		in := frontends.Input{Class: cfg.Class, Services: svcs, Nodes: ns, Local: localNodes(eps), NodePorts: cfg.Mode == dataplane.DNAT}
		probeTargets(&in, prober, cfg.KubeProxyHealthPort)
		fs, skipped := frontends.Build(in)
		for _, s := range skipped {
			cfg.Log.Debug("port not served", "service", s.Service, "reason", s.Reason)
		}
		start := time.Now()
		var err error
		if marks != nil {
			err = marks.Update(knownNodes(ns, fs))
		}
		var t dataplane.Table
		if err == nil {
			t, err = dataplane.Build(fs, maglev.DefaultSize, cfg.Mode, marks)
		}
		// Routes before the table: a new node's mark must have its route before any slot holds it. A change
		// that moves no mark leaves them alone; the start and the resync rewrite them (the drift repair).
		if err == nil && cfg.Routes != nil && (why != "change" || !routesOK || !routed.Equal(marks)) {
			routesOK, routed = false, nil
			if err = dataplane.ApplyRoutes(cfg.Routes, marks); err == nil {
				routesOK = true
				if marks != nil {
					routed = marks.Clone()
				}
			}
		}
		if err == nil {
			// Changes go in as element changes; the start, the resync and the first apply after a failure
			// replace the whole table (the drift repair).
			if prev != nil && why == "change" {
				_, err = dataplane.ApplyChanges(cfg.NFT, *prev, t, maglev.DefaultSize)
			} else {
				err = dataplane.Apply(cfg.NFT, t, maglev.DefaultSize)
			}
			prev = nil
			if err == nil {
				prev = &t
			}
		}
		rep.applied(why, time.Since(start), fs, prober.Targets(), err)
		if err != nil {
			cfg.Log.Error("apply failed; retried at the next change or resync", "why", why, "err", err)
			return
		}
		if cfg.Announce != nil {
			cfg.Announce.SetFrontends(frontendIPs(fs))
		}
		cfg.Log.Info("table applied", "why", why, "frontends", len(fs), "backendSets", t.Sets, "took", time.Since(start).Round(time.Microsecond))
		if cfg.Applied != nil {
			cfg.Applied(fs)
		}
	}
	apply("start")
	resync := time.NewTicker(cfg.Resync)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			apply("resync")
		case <-changed:
			select { // gather the burst
			case <-ctx.Done():
				return nil
			case <-time.After(cfg.Debounce):
			}
			apply("change")
		}
	}
}

// knownNodes are the addresses of every node that exists (healthy or not: a node out of the backend sets keeps its
// mark while its established flows go on) and of every backend.
func knownNodes(ns []*corev1.Node, fs []dataplane.Frontend) []netip.Addr {
	var out []netip.Addr
	for _, n := range ns {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil && a.Type == corev1.NodeInternalIP && ip.Is4() {
				out = append(out, ip)
			}
		}
	}
	for _, f := range fs {
		for _, b := range f.Backends {
			out = append(out, b.IP)
		}
	}
	return out
}

// localNodes is, per Service, the nodes with a ready endpoint (from the EndpointSlices), for Local policy.
func localNodes(eps []*discoveryv1.EndpointSlice) map[string][]string {
	out := map[string][]string{}
	for _, s := range eps {
		svc := s.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := fmt.Sprintf("%s/%s", s.Namespace, svc)
		for _, e := range s.Endpoints {
			if e.NodeName != nil && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				out[key] = append(out[key], *e.NodeName)
			}
		}
	}
	return out
}

// probeTargets sets the prober's targets for in (kube-proxy's healthz on every node with an address; each Local
// Service's healthCheckNodePort on each of its nodes) and applies what the probes found so far: a node failing
// kube-proxy's probe is unhealthy, a node failing a Service's probe has no local endpoint of it — unless all of a
// Service's nodes fail it, then the EndpointSlices are believed (frontends.FailOpen). A target not yet probed counts
// as passing: the EndpointSlices and the Nodes' conditions already vouch for it.
func probeTargets(in *frontends.Input, p *probe.Prober, kubeProxyPort int) {
	addr := map[string]string{}
	for _, n := range in.Nodes {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				addr[n.Name] = a.Address
				break
			}
		}
	}
	url := func(node string, port int32) string {
		return "http://" + net.JoinHostPort(addr[node], strconv.Itoa(int(port))) + "/healthz"
	}
	var urls []string
	in.Unhealthy = map[string]bool{}
	for node := range addr {
		u := url(node, int32(kubeProxyPort))
		urls = append(urls, u)
		if p.Down(u) {
			in.Unhealthy[node] = true
		}
	}
	for _, svc := range in.Services {
		if !in.Class.Serves(svc) || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal || svc.Spec.HealthCheckNodePort == 0 {
			continue
		}
		k := lbsvc.Key(svc)
		var probed []string
		for _, node := range in.Local[k] {
			if _, ok := addr[node]; !ok {
				continue
			}
			urls = append(urls, url(node, svc.Spec.HealthCheckNodePort))
			probed = append(probed, node)
		}
		in.Local[k] = frontends.FailOpen(probed, func(node string) bool { return p.Down(url(node, svc.Spec.HealthCheckNodePort)) })
	}
	p.Set(urls)
}
