// Package probe is the shared load balancer's health probes, as a cloud's load balancer runs them (the shared
// probe mode of cloud-provider-azure): kube-proxy's /healthz on each node (port 10256) decides whether a node takes
// new flows of externalTrafficPolicy Cluster Services, and each Local Service's healthCheckNodePort /healthz
// whether the node has a local endpoint (kube-proxy answers 200 only then). A target goes down after Threshold
// consecutive failures (so within Interval × Threshold) and comes back at its first success.
package probe

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Config tunes the prober.
type Config struct {
	// Interval between probes of a target (default 5 s); each probe's timeout is the interval too.
	Interval time.Duration
	// Threshold is how many consecutive failures take a target down (default 2).
	Threshold int
	// Dial, if set, opens the probes' connections (tests dial inside a network namespace).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Changed is called (from a probe's goroutine) when a target goes down or comes back; Result, if set, after
	// each probe with its outcome.
	Changed func()
	Result  func(ok bool)
	Log     *slog.Logger
}

// Prober probes a set of URLs (http://host:port/healthz) until they are removed from the set or ctx ends.
type Prober struct {
	cfg    Config
	client *http.Client
	ctx    context.Context
	mu     sync.Mutex
	probes map[string]*target
}

type target struct {
	stop     context.CancelFunc
	down     bool
	known    bool
	failures int
}

// New returns a prober whose probes run until ctx ends.
func New(ctx context.Context, cfg Config) *Prober {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Threshold == 0 {
		cfg.Threshold = 2
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if cfg.Dial != nil {
		tr.DialContext = cfg.Dial
	}
	return &Prober{cfg: cfg, ctx: ctx, probes: map[string]*target{},
		client: &http.Client{Transport: tr, Timeout: cfg.Interval,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// Set makes urls the probed targets: new ones start (unknown until their first probe), missing ones stop.
func (p *Prober) Set(urls []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[string]bool{}
	for _, u := range urls {
		want[u] = true
		if _, ok := p.probes[u]; !ok {
			ctx, cancel := context.WithCancel(p.ctx)
			t := &target{stop: cancel}
			p.probes[u] = t
			go p.run(ctx, u, t)
		}
	}
	for u, t := range p.probes {
		if !want[u] {
			t.stop()
			delete(p.probes, u)
		}
	}
}

// Down reports whether url's target is down (false while unknown or not probed).
func (p *Prober) Down(url string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.probes[url]
	return ok && t.down
}

// Known reports whether url's target has been probed at least once.
func (p *Prober) Known(url string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.probes[url]
	return ok && t.known
}

// Targets is each probed target that has had a result, and whether it is down.
func (p *Prober) Targets() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]bool{}
	for url, t := range p.probes {
		if t.known {
			out[url] = t.down
		}
	}
	return out
}

func (p *Prober) run(ctx context.Context, url string, t *target) {
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for {
		ok := p.probe(ctx, url)
		if ctx.Err() != nil {
			return
		}
		if p.cfg.Result != nil {
			p.cfg.Result(ok)
		}
		p.mu.Lock()
		wasDown, wasKnown := t.down, t.known
		t.known = true
		if ok {
			t.failures, t.down = 0, false
		} else if t.failures++; t.failures >= p.cfg.Threshold {
			t.down = true
		}
		changed := t.down != wasDown || (!wasKnown && t.down)
		down := t.down
		p.mu.Unlock()
		if changed {
			p.cfg.Log.Info("probe target changed", "url", url, "down", down)
			if p.cfg.Changed != nil {
				p.cfg.Changed()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (p *Prober) probe(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
