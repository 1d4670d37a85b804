package summary

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const summaryJSON = `{"node":{"nodeName":"node-1"},"pods":[{"podRef":{"name":"web-1","namespace":"default","uid":"u1"},
"cpu":{"usageCoreNanoSeconds":2500000000},"memory":{"workingSetBytes":1048576},
"containers":[{"name":"httpd","startTime":"2026-12-03T12:00:00Z","cpu":{"usageCoreNanoSeconds":2000000000},"memory":{"workingSetBytes":524288}}]}]}`

// Logic only (the kubelet itself answers in the local cloud's test): the pinned certificate is accepted and
// another refused, the token is sent, the pod's and container's CPU and memory come out under the kubelet's
// resource-metric names, and a kubelet that refuses, or has not answered yet, is berth_kubelet_summary_up 0, not
// a failed scrape; an answer too old is not served.
func TestSummaryMetrics(t *testing.T) {
	var auth string
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		if r.URL.Path != "/stats/summary" || auth != "Bearer tok" {
			http.Error(w, "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource=stats)", http.StatusForbidden)
			return
		}
		w.Write([]byte(summaryJSON))
	}))
	defer kubelet.Close()
	dir := t.TempDir()
	cert := filepath.Join(dir, "kubelet.crt")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kubelet.Certificate().Raw}), 0o644)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("tok\n"), 0o600)

	c := New(Config{URL: kubelet.URL, CertFile: cert, TokenFile: token})
	if got := testutil.ToFloat64(onlyUp{c}); got != 0 {
		t.Errorf("before the first answer: up = %v", got)
	}
	c.refresh(t.Context())
	want := `
# HELP berth_kubelet_summary_up Whether the kubelet's Summary API answered within the last three intervals (1) or not (0).
# TYPE berth_kubelet_summary_up gauge
berth_kubelet_summary_up 1
# HELP container_cpu_usage_seconds_total Cumulative CPU time the container used, in core-seconds (the kubelet's Summary API).
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="httpd",namespace="default",pod="web-1"} 2
# HELP container_memory_working_set_bytes The container's working set memory, in bytes (the kubelet's Summary API).
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="httpd",namespace="default",pod="web-1"} 524288
# HELP pod_cpu_usage_seconds_total Cumulative CPU time the pod used, in core-seconds (the kubelet's Summary API).
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web-1"} 2.5
# HELP pod_memory_working_set_bytes The pod's working set memory, in bytes (the kubelet's Summary API).
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web-1"} 1.048576e+06
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "berth_kubelet_summary_up", "container_cpu_usage_seconds_total",
		"container_memory_working_set_bytes", "pod_cpu_usage_seconds_total", "pod_memory_working_set_bytes"); err != nil {
		t.Error(err)
	}

	// An answer older than three intervals is not served.
	c.mu.Lock()
	c.at = time.Now().Add(-4 * c.cfg.Interval)
	c.mu.Unlock()
	if got := testutil.ToFloat64(onlyUp{c}); got != 0 {
		t.Errorf("a stale answer: up = %v", got)
	}
	// Without the token: refused, reported as down.
	noToken := New(Config{URL: kubelet.URL, CertFile: cert})
	noToken.refresh(t.Context())
	if got := testutil.ToFloat64(onlyUp{noToken}); got != 0 {
		t.Errorf("refused: up = %v", got)
	}
	// Another kubelet's certificate: refused before anything is sent.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "node-2@1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	otherCert := filepath.Join(dir, "other.crt")
	os.WriteFile(otherCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	auth = ""
	wrong := New(Config{URL: kubelet.URL, CertFile: otherCert, TokenFile: token})
	if _, err := wrong.Fetch(t.Context()); err == nil || auth != "" {
		t.Errorf("a kubelet with another certificate: %v (token sent: %q)", err, auth)
	}
	if _, err := New(Config{URL: kubelet.URL, CertFile: token}).Fetch(t.Context()); err == nil || !strings.Contains(err.Error(), token) {
		t.Errorf("a certificate file with no certificate: %v", err)
	}
}

// onlyUp is c's berth_kubelet_summary_up alone.
type onlyUp struct{ c *Collector }

func (o onlyUp) Describe(ch chan<- *prometheus.Desc) { ch <- descs.up }
func (o onlyUp) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric, 100)
	o.c.Collect(all)
	close(all)
	for m := range all {
		if m.Desc() == descs.up {
			ch <- m
		}
	}
}
