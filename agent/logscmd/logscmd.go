// Package logscmd is the log shipper's command line (the DaemonSet's berth-logs): validate a LogShipperConfig, or
// run the shipper: every container log under /var/log/pods (and the journal) to each sink, at least once, each
// sink with its own checkpoint; its own metrics, node_exporter's and the kubelet's Summary API's on /metrics.
package logscmd

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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/clientcmd"

	logsv1 "berth.dev/berth/agent/api/logs/v1alpha1"
	"berth.dev/berth/agent/componentimage"
	"berth.dev/berth/agent/configcheck"
	"berth.dev/berth/agent/configwatch"
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
	"berth.dev/berth/internal/node/exitcode"
)

// Usage is the commands' usage, prog being the program's name.
func Usage(prog string) string {
	return fmt.Sprintf(`usage: %[1]s validate -f FILE
       %[1]s run -config FILE [-node NAME] [-metrics-address ADDR] [-kubeconfig FILE]
       %[1]s image -o FILE

  validate   check a LogShipperConfig (logs.berth.dev/v1alpha1): strict decoding, every problem with its field path
  run        the log shipper (a DaemonSet): every container log under /var/log/pods, and the journal, to each sink,
             at least once, each sink with its own checkpoint; metrics and /healthz on -metrics-address
  image      write the log shipper's image (berth.dev/berth-logs, this very binary as /berth-logs) as an OCI
             image-layout tarball, for the image builder's images list; prints its path
`, prog)
}

// Main runs the command args name (prog is the program's name, for messages) and returns its exit code
// (internal/node/exitcode).
func Main(prog string, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, Usage(prog))
		return exitcode.Usage
	}
	switch args[0] {
	case "validate":
		return configcheck.ValidateCmd(prog+" validate", args[1:], stdout, stderr, logsv1.Decode, (*logsv1.LogShipperConfig).Validate)
	case "run":
		return runCmd(prog, args[1:], stderr)
	case "image":
		return componentimage.Logs.Cmd(prog, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, Usage(prog))
	return exitcode.Usage
}

// runCmd ships the pods' logs to every sink until SIGTERM (exit 0).
func runCmd(prog string, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet(prog+" run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "LogShipperConfig file (required)")
	node := fs.String("node", os.Getenv("NODE_NAME"), "this node's name, on every record (default $NODE_NAME)")
	metricsAddr := fs.String("metrics-address", "127.0.0.1:9471", "where /metrics (the shipper's own and spec.metrics' metrics) and /healthz are served; empty: nowhere")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig for the pods' labels (default: in-cluster; none: records without labels)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitcode.Usage
	}
	if *file == "" {
		fmt.Fprintf(stderr, "%s run: -config FILE is required\n", prog)
		return exitcode.Usage
	}
	c, data, code := configcheck.Load(*file, stderr, logsv1.Decode, (*logsv1.LogShipperConfig).Validate)
	if code != exitcode.OK {
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
		fmt.Fprintf(stderr, "%s: spec.metrics: %v\n", prog, err)
		return exitcode.InvalidConfig
	}
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			fmt.Fprintf(stderr, "%s: -metrics-address: %v\n", prog, err)
			return exitcode.Usage
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
	} else if mc, err := metadata.NewForConfig(rc); err != nil {
		log.Warn("no API access: records carry no pod labels", "err", err)
	} else {
		meta = podmeta.Start(ctx, mc, *node).Attrs
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(spec.Sinks))
	for i, s := range spec.Sinks {
		sk, err := newSink(s)
		if err != nil {
			fmt.Fprintf(stderr, "%s: spec.sinks[%d].tls: %v\n", prog, i, err)
			return exitcode.InvalidConfig
		}
		sm := metrics.For(s.Name)
		d, err := deliver.New(deliver.Config{Sink: sk, Checkpoint: filepath.Join(spec.StateDir, s.Name+".checkpoint.json"),
			DeadLetter: filepath.Join(spec.StateDir, s.Name+".dead-letters.ndjson"), Backoff: s.Retry.Initial.Duration,
			MaxBackoff: s.Retry.Max.Duration, Observe: sm, Log: log.With("sink", s.Name)})
		if err != nil {
			fmt.Fprintf(stderr, "%s: sink %s: %v\n", prog, s.Name, err)
			return exitcode.InvalidConfig
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ship.Run(ctx, ship.Config{Root: spec.PodLogs.Path, Deliverer: d, Node: *node, BatchRecords: s.Batch.Records,
				BatchBytes: s.Batch.Bytes, Linger: s.Batch.Linger.Duration, MaxLine: spec.PodLogs.MaxLineBytes,
				Lag: sm.Lag, Buffered: sm.Buffered, Meta: meta, Journal: journalConfig(spec.Journal), Log: log.With("sink", s.Name)}); err != nil {
				errs <- fmt.Errorf("sink %s: %w", s.Name, err)
				stop()
			}
		}()
	}
	var restart atomic.Bool
	go watchConfig(ctx, *file, data, log, metrics, func() { restart.Store(true); stop() })
	log.Info("shipping", "pods", spec.PodLogs.Path, "sinks", len(spec.Sinks), "node", *node)
	wg.Wait()
	close(errs)
	code = exitcode.OK
	for err := range errs {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		code = exitcode.Internal
	}
	if code == exitcode.OK && restart.Load() {
		// Every pipeline stopped (what was acknowledged is committed): the same program, in the same process (no
		// container restart and its back-off), starts again and reads the new config.
		self, err := os.Executable()
		if err == nil {
			err = syscall.Exec(self, os.Args, os.Environ())
		}
		fmt.Fprintf(stderr, "%s: restarting with the new config: %v\n", prog, err)
		return exitcode.Internal
	}
	return code
}

// watchConfig follows the config file (a ConfigMap volume's, which the kubelet replaces): a new content that is
// not a valid config is refused, every problem logged with its field path, and shipping goes on with the running
// config; a valid one calls restart.
func watchConfig(ctx context.Context, file string, running []byte, log *slog.Logger, metrics *shipmetrics.Metrics, restart func()) {
	err := configwatch.Watch(ctx, configwatch.Config{Path: file, Current: running,
		Changed: func(data []byte) {
			_, problems := configcheck.Parse(data, logsv1.Decode, (*logsv1.LogShipperConfig).Validate)
			if len(problems) == 0 {
				log.Info("the config changed; restarting with it", "file", file)
				restart()
				return
			}
			metrics.ConfigRefused()
			for _, p := range problems {
				log.Error("config problem", "file", file, "problem", p)
			}
			log.Error("the changed config is refused; shipping goes on with the running one", "file", file, "problems", len(problems))
		},
		ReadFailed: func(err error) {
			log.Warn("reading the changed config; shipping goes on with the running one", "file", file, "err", err)
		}})
	if err != nil {
		log.Warn("config changes will not be seen", "err", err)
	}
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
func newSink(s logsv1.Sink) (sink.Sink, error) {
	h := sink.HTTP{URL: s.URL, Header: s.Header(), HeaderFiles: s.HeadersFromFiles}
	if t := s.TLS; t != nil {
		c, err := sink.TLSClient(t.CAFile, t.CertFile, t.KeyFile)
		if err != nil {
			return nil, err
		}
		h.Client = c
	}
	switch s.Type {
	case logsv1.SinkLoki:
		return loki.New(loki.Config{HTTP: h}), nil
	case logsv1.SinkElasticsearch:
		return esbulk.New(esbulk.Config{HTTP: h, Index: s.Index}), nil
	default:
		return otlp.New(otlp.Config{HTTP: h}), nil
	}
}
