// Package summary turns the kubelet's Summary API (/stats/summary) into Prometheus metrics: each pod's and
// container's CPU and memory, under the names of the kubelet's own resource metrics (/metrics/resource), which is
// what metrics-server reads. It asks the kubelet on a period of its own, with a deadline, and a scrape serves the
// last answer: a slow kubelet (seconds, on a loaded node) never holds up a scrape of the other metrics.
package summary

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	statsv1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Config says how to reach the kubelet.
type Config struct {
	// URL is the kubelet's base URL, e.g. https://127.0.0.1:10250 (from a pod on the host network).
	URL string
	// CertFile holds the certificate the kubelet must present: its own self-signed serving certificate (the
	// kubelet's <certDirectory>/kubelet.crt, read from the host), pinned; or the CA that signed it, verified as
	// usual without the host name (the kubelet is reached by address).
	CertFile string
	// TokenFile is the bearer token (the pod's ServiceAccount token, re-read at every scrape: it is rotated); the
	// kubelet asks the apiserver whether it may get nodes/stats.
	TokenFile string
	// Interval is how often the kubelet is asked (default 15 s); Timeout bounds one request (default 10 s, as
	// metrics-server's). An answer older than three intervals is not served.
	Interval, Timeout time.Duration
	Log               *slog.Logger
}

// Collector is a prometheus.Collector over the kubelet's Summary API.
type Collector struct {
	cfg Config

	mu   sync.Mutex
	last *statsv1.Summary
	at   time.Time
}

var (
	podLabels       = []string{"namespace", "pod"}
	containerLabels = []string{"namespace", "pod", "container"}
	descs           = struct{ up, podCPU, podMem, ctrCPU, ctrMem, ctrStart *prometheus.Desc }{
		up:       prometheus.NewDesc("berth_kubelet_summary_up", "Whether the kubelet's Summary API answered within the last three intervals (1) or not (0).", nil, nil),
		podCPU:   prometheus.NewDesc("pod_cpu_usage_seconds_total", "Cumulative CPU time the pod used, in core-seconds (the kubelet's Summary API).", podLabels, nil),
		podMem:   prometheus.NewDesc("pod_memory_working_set_bytes", "The pod's working set memory, in bytes (the kubelet's Summary API).", podLabels, nil),
		ctrCPU:   prometheus.NewDesc("container_cpu_usage_seconds_total", "Cumulative CPU time the container used, in core-seconds (the kubelet's Summary API).", containerLabels, nil),
		ctrMem:   prometheus.NewDesc("container_memory_working_set_bytes", "The container's working set memory, in bytes (the kubelet's Summary API).", containerLabels, nil),
		ctrStart: prometheus.NewDesc("container_start_time_seconds", "When the container started, in seconds since the epoch (the kubelet's Summary API).", containerLabels, nil),
	}
)

// New is a collector for cfg; Run keeps it current. The certificate and the token are read at every request: the
// kubelet makes a new self-signed certificate when its old one expires, and the token is rotated.
func New(cfg Config) *Collector {
	if cfg.Interval == 0 {
		cfg.Interval = 15 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Collector{cfg: cfg}
}

// trust is the TLS config that accepts the certificate in file, or one that a CA in file signed.
func trust(file string) (*tls.Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("kubelet certificate: %w", err)
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("kubelet certificate %s: %w", file, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("kubelet certificate %s: no PEM certificate in it", file)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified below instead: the kubelet is reached by address, and its self-signed certificate names its host.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("the kubelet presented no certificate")
			}
			for _, c := range certs {
				if bytes.Equal(c.Raw, raw[0]) {
					return nil // the pinned certificate itself
				}
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			inter := x509.NewCertPool()
			for _, r := range raw[1:] {
				if c, err := x509.ParseCertificate(r); err == nil {
					inter.AddCert(c)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("the kubelet's certificate is neither the one in %s nor signed by it: %w", file, err)
			}
			return nil
		},
	}, nil
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descs.up, descs.podCPU, descs.podMem, descs.ctrCPU, descs.ctrMem, descs.ctrStart} {
		ch <- d
	}
}

// Run asks the kubelet every interval until ctx ends.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		c.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// refresh asks the kubelet once and keeps a good answer.
func (c *Collector) refresh(ctx context.Context) {
	s, err := c.Fetch(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.cfg.Log.Warn("kubelet Summary API", "url", c.cfg.URL, "err", err)
		}
		return
	}
	c.mu.Lock()
	c.last, c.at = s, time.Now()
	c.mu.Unlock()
}

// Collect implements prometheus.Collector: the last answer, unless it is older than three intervals.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	s, at := c.last, c.at
	c.mu.Unlock()
	if s == nil || time.Since(at) > 3*c.cfg.Interval {
		ch <- prometheus.MustNewConstMetric(descs.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descs.up, prometheus.GaugeValue, 1)
	for _, p := range s.Pods {
		ns, pod := p.PodRef.Namespace, p.PodRef.Name
		if p.CPU != nil && p.CPU.UsageCoreNanoSeconds != nil {
			ch <- prometheus.MustNewConstMetric(descs.podCPU, prometheus.CounterValue, float64(*p.CPU.UsageCoreNanoSeconds)/1e9, ns, pod)
		}
		if p.Memory != nil && p.Memory.WorkingSetBytes != nil {
			ch <- prometheus.MustNewConstMetric(descs.podMem, prometheus.GaugeValue, float64(*p.Memory.WorkingSetBytes), ns, pod)
		}
		for _, ctr := range p.Containers {
			if ctr.CPU != nil && ctr.CPU.UsageCoreNanoSeconds != nil {
				ch <- prometheus.MustNewConstMetric(descs.ctrCPU, prometheus.CounterValue, float64(*ctr.CPU.UsageCoreNanoSeconds)/1e9, ns, pod, ctr.Name)
			}
			if ctr.Memory != nil && ctr.Memory.WorkingSetBytes != nil {
				ch <- prometheus.MustNewConstMetric(descs.ctrMem, prometheus.GaugeValue, float64(*ctr.Memory.WorkingSetBytes), ns, pod, ctr.Name)
			}
			if !ctr.StartTime.IsZero() {
				ch <- prometheus.MustNewConstMetric(descs.ctrStart, prometheus.GaugeValue, float64(ctr.StartTime.Unix()), ns, pod, ctr.Name)
			}
		}
	}
}

// Fetch asks the kubelet for its summary (pods' CPU and memory only).
func (c *Collector) Fetch(ctx context.Context) (*statsv1.Summary, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.cfg.URL, "/")+"/stats/summary?only_cpu_and_memory=true", nil)
	if err != nil {
		return nil, err
	}
	if c.cfg.TokenFile != "" {
		tok, err := os.ReadFile(c.cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	tlsConfig, err := trust(c.cfg.CertFile)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Timeout: c.cfg.Timeout, Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	var s statsv1.Summary
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&s); err != nil {
		return nil, fmt.Errorf("the summary: %w", err)
	}
	return &s, nil
}
