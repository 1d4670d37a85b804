package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	logsv1 "berth.dev/berth/agent/api/logs/v1alpha1"
	"berth.dev/berth/agent/logship/deliver"
	"berth.dev/berth/agent/logship/journal"
	"berth.dev/berth/agent/logship/podmeta"
	"berth.dev/berth/agent/logship/ship"
	"berth.dev/berth/agent/logship/shipmetrics"
	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/esbulk"
	"berth.dev/berth/agent/logship/sink/loki"
	"berth.dev/berth/agent/logship/sink/otlp"
	"berth.dev/berth/agent/metrics/nodeexporter"
	"berth.dev/berth/agent/metrics/summary"
)

// logsCmd is the log shipper's commands: validate a LogShipperConfig, or run the shipper.
func logsCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "validate":
		return validateCmd("berth-agent logs validate", args[1:], stdout, stderr, logsv1.Decode, (*logsv1.LogShipperConfig).Validate)
	case "run":
		return logsRunCmd(args[1:], stderr)
	}
	fmt.Fprint(stderr, usage)
	return exitUsage
}

// logsRunCmd ships the pods' logs to every sink until SIGTERM (exit 0).
func logsRunCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent logs run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "LogShipperConfig file (required)")
	node := fs.String("node", os.Getenv("NODE_NAME"), "this node's name, on every record (default $NODE_NAME)")
	metricsAddr := fs.String("metrics-address", "127.0.0.1:9471", "where /metrics (the shipper's own and spec.metrics' metrics) and /healthz are served; empty: nowhere")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for the pods' labels (default: in-cluster; none: records without labels)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	if *file == "" {
		fmt.Fprintln(stderr, "berth-agent logs run: -config FILE is required")
		return exitUsage
	}
	c, code := check(*file, stderr, logsv1.Decode, (*logsv1.LogShipperConfig).Validate)
	if code != exitOK {
		return code
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	spec := c.Defaulted()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := shipmetrics.New(reg)
	if err := registerNodeMetrics(ctx, reg, spec.Metrics, log); err != nil {
		fmt.Fprintf(stderr, "berth-agent: spec.metrics: %v\n", err)
		return exitInvalidConfig
	}
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			fmt.Fprintf(stderr, "berth-agent: -metrics-address: %v\n", err)
			return exitUsage
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// The readiness probe's: the config was valid and the pipelines are starting; cheap, unlike a scrape.
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
	}
	var meta func(types.UID) []sink.Attr
	if rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig); err != nil {
		log.Warn("no API access: records carry no pod labels", "err", err)
	} else if cs, err := kubernetes.NewForConfig(rc); err != nil {
		log.Warn("no API access: records carry no pod labels", "err", err)
	} else {
		meta = podmeta.Start(ctx, cs, *node).Attrs
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(spec.Sinks))
	for _, s := range spec.Sinks {
		d, err := deliver.New(deliver.Config{Sink: newSink(s), Checkpoint: filepath.Join(spec.StateDir, s.Name+".checkpoint.json"),
			DeadLetter: filepath.Join(spec.StateDir, s.Name+".dead-letters.ndjson"), Backoff: s.Retry.Initial.Duration,
			MaxBackoff: s.Retry.Max.Duration, Observe: metrics.For(s.Name), Log: log.With("sink", s.Name)})
		if err != nil {
			fmt.Fprintf(stderr, "berth-agent: sink %s: %v\n", s.Name, err)
			return exitInvalidConfig
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ship.Run(ctx, ship.Config{Root: spec.PodLogs.Path, Deliverer: d, Node: *node, BatchRecords: s.Batch.Records,
				BatchBytes: s.Batch.Bytes, Linger: s.Batch.Linger.Duration, MaxLine: spec.PodLogs.MaxLineBytes,
				Lag: metrics.For(s.Name).Lag, Meta: meta, Journal: journalConfig(spec.Journal), Log: log.With("sink", s.Name)}); err != nil {
				errs <- fmt.Errorf("sink %s: %w", s.Name, err)
				stop()
			}
		}()
	}
	log.Info("shipping", "pods", spec.PodLogs.Path, "sinks", len(spec.Sinks), "node", *node)
	wg.Wait()
	close(errs)
	code = exitOK
	for err := range errs {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		code = exitInternal
	}
	return code
}

// registerNodeMetrics adds node_exporter's collectors and the kubelet's Summary API to reg, as m asks.
func registerNodeMetrics(ctx context.Context, reg prometheus.Registerer, m *logsv1.Metrics, log *slog.Logger) error {
	if m == nil {
		return nil
	}
	if n := m.Node; n != nil {
		c, err := nodeexporter.New(nodeexporter.Config{Root: n.HostRoot, Collectors: n.Collectors, Log: log.With("metrics", "node")})
		if err != nil {
			return fmt.Errorf("node: %w", err)
		}
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	if p := m.Pods; p != nil {
		c := summary.New(summary.Config{URL: p.KubeletURL, CertFile: p.KubeletCertFile, TokenFile: p.TokenFile, Log: log.With("metrics", "pods")})
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("pods: %w", err)
		}
		go c.Run(ctx)
	}
	return nil
}

// journalConfig is the journal input's config, nil if the journal is not read.
func journalConfig(j *logsv1.Journal) *journal.Config {
	if j == nil {
		return nil
	}
	return &journal.Config{Directory: j.Directory, Command: j.Command, Root: j.HostRoot}
}

// newSink builds the sink a validated, defaulted Sink describes.
func newSink(s logsv1.Sink) sink.Sink {
	switch s.Type {
	case logsv1.SinkLoki:
		return loki.New(loki.Config{HTTP: sink.HTTP{URL: s.URL, Header: s.Header()}})
	case logsv1.SinkElasticsearch:
		return esbulk.New(esbulk.Config{HTTP: sink.HTTP{URL: s.URL, Header: s.Header()}, Index: s.Index})
	default:
		return otlp.New(otlp.Config{HTTP: sink.HTTP{URL: s.URL, Header: s.Header()}})
	}
}
