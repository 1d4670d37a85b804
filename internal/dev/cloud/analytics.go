package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"berth.dev/berth/internal/dev/logsql"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	logsv1 "berth.dev/berth/agent/api/logs/v1alpha1"
	"berth.dev/berth/deploy"
	"berth.dev/berth/internal/dev/proc"
)

// AnalyticsConfig is the cloud's analytics service: where the nodes' log shipper sends what it reads, and what
// scrapes the metrics it serves.
type AnalyticsConfig struct {
	// VictoriaLogs is the victoria-logs binary (tools/build.sh victorialogs; required).
	VictoriaLogs string
	// VictoriaMetrics is the victoria-metrics binary (Debian's; required).
	VictoriaMetrics string
}

// Analytics is the cloud's running analytics service: VictoriaLogs and VictoriaMetrics in the cloud's namespace on
// the bridge, and the log shipper's DaemonSet (deploy/logs.yaml) on every node, shipping its logs to the one and
// scraped by the other.
type Analytics struct {
	// LogsURL is VictoriaLogs' base URL, reached inside the cloud's namespace (the nodes reach it on the bridge).
	LogsURL string
	// MetricsURL is VictoriaMetrics' base URL, inside the cloud's namespace.
	MetricsURL string
	// Dir holds VictoriaLogs' data, the shipper's LogShipperConfig and the logs.
	Dir string

	c *Cloud
}

// The analytics service's ports on the bridge: VictoriaLogs' and VictoriaMetrics'; and the port of the log
// shipper's /metrics on each node (deploy/logs.yaml).
const (
	LogsPort       = 9428
	MetricsPort    = 8428
	ShipperPort    = 9471
	ScrapeInterval = 10 * time.Second
	latencyOffset  = "1s" // how soon VictoriaMetrics shows a scraped sample (its default is 30 s)
)

// StartAnalytics starts VictoriaLogs on the bridge (the cloud's log analytics service) and deploys the log
// shipper as a user does, `kubectl apply` of deploy/logs.yaml with its ConfigMap's sink set to that VictoriaLogs,
// then waits until the DaemonSet's pod is ready on every node. It is re-run safely: the apply converges.
func (c *Cloud) StartAnalytics(ctx context.Context, cfg AnalyticsConfig) (*Analytics, error) {
	if cfg.VictoriaLogs == "" || cfg.VictoriaMetrics == "" {
		return nil, errors.New("cloud: analytics: VictoriaLogs and VictoriaMetrics: required")
	}
	a := &Analytics{Dir: filepath.Join(c.cfg.Dir, "analytics"), c: c,
		LogsURL:    "http://" + netip.AddrPortFrom(c.Gateway, LogsPort).String(),
		MetricsURL: "http://" + netip.AddrPortFrom(c.Gateway, MetricsPort).String()}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return nil, err
	}
	c.Analytics = a // from here Down stops what was started
	if err := c.save(); err != nil {
		return a, err
	}
	group := &proc.Group{Registry: *c.cfg.Registry, Dir: a.Dir, Detached: c.cfg.Detached}
	if _, err := group.Start("victoria-logs", "nsenter", "--net="+c.NS.Path(), "--", cfg.VictoriaLogs,
		"-httpListenAddr="+netip.AddrPortFrom(c.Gateway, LogsPort).String(), "-storageDataPath="+filepath.Join(a.Dir, "victoria-logs"),
		"-retentionPeriod=30d", "-loggerLevel=WARN"); err != nil {
		return a, fmt.Errorf("cloud: analytics: %w", err)
	}
	scrape, err := a.scrapeConfig()
	if err != nil {
		return a, err
	}
	if _, err := group.Start("victoria-metrics", "nsenter", "--net="+c.NS.Path(), "--", cfg.VictoriaMetrics,
		"-httpListenAddr="+netip.AddrPortFrom(c.Gateway, MetricsPort).String(), "-storageDataPath="+filepath.Join(a.Dir, "victoria-metrics"),
		"-retentionPeriod=1d", "-loggerLevel=WARN", "-promscrape.config="+scrape, "-search.latencyOffset="+latencyOffset); err != nil {
		return a, fmt.Errorf("cloud: analytics: %w", err)
	}
	for name, base := range map[string]string{"victoria-logs": a.LogsURL, "victoria-metrics": a.MetricsURL} {
		if err := a.waitHealthy(ctx, name, base); err != nil {
			return a, err
		}
	}
	doc := logsv1.LogShipperConfig{APIVersion: logsv1.APIVersion, Kind: logsv1.Kind, Spec: logsv1.LogShipperConfigSpec{
		PodLogs: logsv1.PodLogs{Path: "/var/log/pods"}, Journal: &logsv1.Journal{HostRoot: "/host"}, StateDir: "/var/lib/berth/logs",
		Metrics: &logsv1.Metrics{Node: &logsv1.NodeMetrics{HostRoot: "/host"}, Pods: &logsv1.PodMetrics{}},
		Sinks:   []logsv1.Sink{{Name: "analytics", Type: logsv1.SinkOTLP, URL: a.LogsURL + "/insert/opentelemetry"}}}}
	if errs := doc.Validate(); len(errs) > 0 {
		return a, fmt.Errorf("cloud: analytics: %w", errs.ToAggregate())
	}
	config, err := yaml.Marshal(doc)
	if err != nil {
		return a, err
	}
	manifest, err := deploy.LogsWith(string(config))
	if err != nil {
		return a, fmt.Errorf("cloud: analytics: %w", err)
	}
	if err := os.WriteFile(filepath.Join(a.Dir, "logs.yaml"), []byte(manifest), 0o644); err != nil {
		return a, err
	}
	if out, err := c.kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		return a, fmt.Errorf("cloud: analytics: kubectl apply -f deploy/logs.yaml: %w\n%s", err, out)
	}
	if err := a.waitShipping(ctx); err != nil {
		return a, err
	}
	c.cfg.Log.Info("analytics started", "victoria-logs", a.LogsURL, "victoria-metrics", a.MetricsURL, "log shipper", "kube-system/berth-logs")
	return a, nil
}

// kubectl runs the pinned kubectl as cluster-admin inside the cloud's namespace, with stdin.
func (c *Cloud) kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + c.NS.Path(), "--", filepath.Join(c.cfg.BinDir, "kubectl"),
		"--kubeconfig", c.CP.KubeconfigPath()}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// client is an HTTP client that dials inside the cloud's namespace.
func (a *Analytics) client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return a.c.NS.DialContext(ctx, network, addr)
		}}}
}

// scrapeConfig writes VictoriaMetrics' scrape config: every node's log shipper, labelled with the node's name.
func (a *Analytics) scrapeConfig() (string, error) {
	var targets []map[string]any
	for _, n := range a.c.Nodes {
		targets = append(targets, map[string]any{"targets": []string{netip.AddrPortFrom(n.IP, ShipperPort).String()},
			"labels": map[string]string{"node": n.Name}})
	}
	data, err := yaml.Marshal(map[string]any{"scrape_configs": []map[string]any{{"job_name": "berth-logs",
		"scrape_interval": ScrapeInterval.String(), "static_configs": targets}}})
	if err != nil {
		return "", err
	}
	path := filepath.Join(a.Dir, "scrape.yaml")
	return path, os.WriteFile(path, data, 0o644)
}

func (a *Analytics) waitHealthy(ctx context.Context, name, base string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		resp, err := a.client().Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cloud: analytics: %s not healthy (%v): %s", name, err, proc.Tail(filepath.Join(a.Dir, "logs", name+".log"), 10))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitShipping waits until the log shipper's DaemonSet has a ready, current pod on every node.
func (a *Analytics) waitShipping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var last string
	for {
		ds, err := a.c.CP.Client.AppsV1().DaemonSets(metav1.NamespaceSystem).Get(ctx, deploy.LogsConfigMap, metav1.GetOptions{})
		if err == nil {
			s := ds.Status
			last = fmt.Sprintf("%d of %d pods ready, %d updated, %d nodes", s.NumberReady, s.DesiredNumberScheduled, s.UpdatedNumberScheduled, len(a.c.Nodes))
			if s.ObservedGeneration >= ds.Generation && int(s.DesiredNumberScheduled) == len(a.c.Nodes) &&
				s.NumberReady == s.DesiredNumberScheduled && s.UpdatedNumberScheduled == s.DesiredNumberScheduled {
				return nil
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cloud: analytics: the log shipper's DaemonSet is not ready: %s", last)
		case <-time.After(2 * time.Second):
		}
	}
}

// Query runs a LogsQL query against the cloud's VictoriaLogs (from this host, inside the namespace) and returns
// the matching entries, each a field → value map, at most limit of them (0: no limit).
func (a *Analytics) Query(ctx context.Context, query string, limit int) ([]map[string]string, error) {
	return logsql.Query(ctx, a.client(), a.LogsURL, query, limit)
}

// Sample is one series of an instant query's answer.
type Sample struct {
	Metric map[string]string
	Value  float64
}

// QueryMetrics runs an instant PromQL query against the Prometheus-compatible API at base through client.
func QueryMetrics(ctx context.Context, client *http.Client, base, query string) ([]Sample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/v1/query", strings.NewReader(url.Values{"query": {query}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics query %q: %w", query, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("metrics query %q: HTTP %d: %w", query, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("metrics query %q: %s", query, body.Error)
	}
	var out []Sample
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("metrics query %q: value %v", query, r.Value[1])
		}
		out = append(out, Sample{Metric: r.Metric, Value: v})
	}
	return out, nil
}
