// Package sharemetrics is the share drivers' Prometheus metrics (client_golang), registered on a registry the
// caller owns (no global state): the shares mounted, the health probes' results and the remounts.
package sharemetrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"berth.dev/berth/agent/shares/health"
)

// Metrics are the share drivers' collectors.
type Metrics struct {
	mounted  *prometheus.GaugeVec
	probes   *prometheus.CounterVec
	broken   *prometheus.GaugeVec
	remounts *prometheus.CounterVec
}

// New registers the metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		mounted: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_shares_mounted",
			Help: "Shares mounted on this node, by driver (one mount serves every volume of the same share, options and credentials)."}, []string{"driver"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_shares_probes_total",
			Help: "Health probes of mounted shares, by driver and result (ok, dead, hung, failed)."}, []string{"driver", "result"}),
		broken: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_shares_broken",
			Help: "Shares whose last probe found them dead or hung, by driver."}, []string{"driver"}),
		remounts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_shares_remounts_total",
			Help: "Remounts of dead or hung shares, by driver and result (ok, error)."}, []string{"driver", "result"}),
	}
	reg.MustRegister(m.mounted, m.probes, m.broken, m.remounts)
	return m
}

// Driver is one driver's view of the metrics.
type Driver struct {
	m      *Metrics
	name   string
	broken map[string]bool
}

// Driver returns the metrics of one driver; its methods are called from that driver's health loop only.
func (m *Metrics) Driver(name string) *Driver {
	for _, r := range []string{"ok", "dead", "hung", "failed"} {
		m.probes.WithLabelValues(name, r)
	}
	m.remounts.WithLabelValues(name, "ok")
	m.remounts.WithLabelValues(name, "error")
	m.mounted.WithLabelValues(name)
	m.broken.WithLabelValues(name)
	return &Driver{m: m, name: name, broken: map[string]bool{}}
}

// Round records a probe round's start: the shares mounted now (by key).
func (d *Driver) Round(keys []string) {
	d.m.mounted.WithLabelValues(d.name).Set(float64(len(keys)))
	live := map[string]bool{}
	for _, k := range keys {
		live[k] = true
	}
	for k := range d.broken {
		if !live[k] {
			delete(d.broken, k)
		}
	}
	d.m.broken.WithLabelValues(d.name).Set(float64(len(d.broken)))
}

// Probed records a probe's result.
func (d *Driver) Probed(key string, r health.Result) {
	d.m.probes.WithLabelValues(d.name, r.State.String()).Inc()
	if r.State == health.Dead || r.State == health.Hung {
		d.broken[key] = true
	} else {
		delete(d.broken, key)
	}
	d.m.broken.WithLabelValues(d.name).Set(float64(len(d.broken)))
}

// Remounted records a remount's result.
func (d *Driver) Remounted(key string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	} else {
		delete(d.broken, key)
		d.m.broken.WithLabelValues(d.name).Set(float64(len(d.broken)))
	}
	d.m.remounts.WithLabelValues(d.name, result).Inc()
}
