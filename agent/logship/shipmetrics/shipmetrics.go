// Package shipmetrics is the log shipper's own Prometheus metrics (client_golang), registered on a registry the
// caller owns: records shipped, retries, dead letters and batch latency per sink, and how far each sink lags behind
// each container log in bytes (the log files are the buffer: a lag that nears the kubelet's rotation budget,
// containerLogMaxSize × (containerLogMaxFiles − 2), is about to lose lines).
package shipmetrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the shipper's collectors.
type Metrics struct {
	shipped, retries, dead *prometheus.CounterVec
	lag                    *prometheus.GaugeVec
	files                  *prometheus.GaugeVec
	bufRecords, bufBytes   *prometheus.GaugeVec
	configValid            prometheus.Gauge
	configRefused          prometheus.Counter
}

// New registers the metrics on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		shipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_logs_shipped_records_total",
			Help: "Records a sink acknowledged."}, []string{"sink"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_logs_retries_total",
			Help: "Deliveries retried after a transient failure or a partial answer."}, []string{"sink"}),
		dead: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "berth_logs_dead_letters_total",
			Help: "Records a sink refused for good, written to its dead-letter file."}, []string{"sink"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_logs_lag_bytes",
			Help: "Bytes of a container log not yet read for a sink (its file and rotated files still to read)."}, []string{"sink", "path"}),
		files: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_logs_followed_files",
			Help: "Container logs a sink follows."}, []string{"sink"}),
		bufRecords: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_logs_buffered_records",
			Help: "Records a sink holds in memory: read, not yet acknowledged (at most a batch)."}, []string{"sink"}),
		bufBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_logs_buffered_bytes",
			Help: "Bytes of log lines a sink holds in memory: read, not yet acknowledged (at most a batch's bytes)."}, []string{"sink"}),
		configValid: prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_logs_config_valid",
			Help: "1 while the config file holds the config the shipper runs with; 0 after a change to it was refused (the shipper goes on with the one it runs)."}),
		configRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_logs_config_refused_total",
			Help: "Changes to the config file refused as invalid (each problem is in the log, with its field path)."}),
	}
	m.configValid.Set(1)
	reg.MustRegister(m.shipped, m.retries, m.dead, m.lag, m.files, m.bufRecords, m.bufBytes, m.configValid, m.configRefused)
	return m
}

// ConfigRefused counts a change to the config file that was refused.
func (m *Metrics) ConfigRefused() {
	m.configValid.Set(0)
	m.configRefused.Inc()
}

// Sink is one sink's view: it is a deliver.Observer and takes the lag per file.
type Sink struct {
	m    *Metrics
	name string
}

// For is the metrics of the sink named name.
func (m *Metrics) For(name string) *Sink { return &Sink{m: m, name: name} }

func (s *Sink) Delivered(n int)    { s.m.shipped.WithLabelValues(s.name).Add(float64(n)) }
func (s *Sink) Retried(error)      { s.m.retries.WithLabelValues(s.name).Inc() }
func (s *Sink) DeadLettered(n int) { s.m.dead.WithLabelValues(s.name).Add(float64(n)) }

// Buffered sets what the sink holds in memory.
func (s *Sink) Buffered(records, bytes int) {
	s.m.bufRecords.WithLabelValues(s.name).Set(float64(records))
	s.m.bufBytes.WithLabelValues(s.name).Set(float64(bytes))
}

// Lag sets the lag of every followed file (files not given are dropped).
func (s *Sink) Lag(perPath map[string]int64) {
	s.m.lag.DeletePartialMatch(prometheus.Labels{"sink": s.name})
	for p, n := range perPath {
		s.m.lag.WithLabelValues(s.name, p).Set(float64(n))
	}
	s.m.files.WithLabelValues(s.name).Set(float64(len(perPath)))
}
