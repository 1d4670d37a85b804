// Package lbmetrics is the LB host role's Prometheus metrics (client_golang), registered on a registry the caller
// owns (no global state).
package lbmetrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the LB host's collectors.
type Metrics struct {
	syncSeconds *prometheus.HistogramVec
	syncErrors  prometheus.Counter
	backends    *prometheus.GaugeVec
	probes      *prometheus.CounterVec
	probeDown   *prometheus.GaugeVec
	announced   *prometheus.GaugeVec
	liveHosts   prometheus.Gauge
}

// New registers the metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		syncSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_lb_sync_duration_seconds",
			Help:    "Time to compute and apply the LB host's nftables table and routes, by why it was applied (start, change, resync).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"why"}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_lb_sync_errors_total",
			Help: "Applies of the LB host's table that failed."}),
		backends: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_lb_frontend_backends",
			Help: "Healthy nodes taking new flows, per frontend IP:port/protocol."}, []string{"frontend"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_lb_probes_total",
			Help: "Health probes run, by result (success, failure)."}, []string{"result"}),
		probeDown: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_lb_probe_down",
			Help: "1 for a probe target (http://node:port/healthz) that is down, 0 for one that is up."}, []string{"target"}),
		announced: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_lb_announced",
			Help: "1 for each frontend IP this LB host announces."}, []string{"ip"}),
		liveHosts: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_lb_live_hosts",
			Help: "LB hosts this host sees as live, itself included."}),
	}
	reg.MustRegister(m.syncSeconds, m.syncErrors, m.backends, m.probes, m.probeDown, m.announced, m.liveHosts)
	return m
}

// Synced records one apply.
func (m *Metrics) Synced(why string, took time.Duration, err error) {
	m.syncSeconds.WithLabelValues(why).Observe(took.Seconds())
	if err != nil {
		m.syncErrors.Inc()
	}
}

// Backends sets the backends per frontend (frontends not given are dropped).
func (m *Metrics) Backends(perFrontend map[string]int) {
	m.backends.Reset()
	for f, n := range perFrontend {
		m.backends.WithLabelValues(f).Set(float64(n))
	}
}

// Probed counts one probe.
func (m *Metrics) Probed(ok bool) {
	if ok {
		m.probes.WithLabelValues("success").Inc()
	} else {
		m.probes.WithLabelValues("failure").Inc()
	}
}

// ProbeTargets sets the targets' states (url → down).
func (m *Metrics) ProbeTargets(down map[string]bool) {
	m.probeDown.Reset()
	for url, d := range down {
		v := 0.0
		if d {
			v = 1
		}
		m.probeDown.WithLabelValues(url).Set(v)
	}
}

// Announcing sets the announced IPs and the live hosts' count.
func (m *Metrics) Announcing(ips []string, live int) {
	m.announced.Reset()
	for _, ip := range ips {
		m.announced.WithLabelValues(ip).Set(1)
	}
	m.liveHosts.Set(float64(live))
}
