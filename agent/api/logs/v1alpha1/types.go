// Package v1alpha1 is berth's log shipper configuration API, logs.berth.dev/v1alpha1 LogShipperConfig: what the
// agent's `logs` role reads (the pods' container logs) and where it ships them (one or more sinks, each with its
// own checkpoint). It is delivered as a ConfigMap and, like NodeConfig, decoded strictly and validated with every
// problem reported at once, each with its field path.
package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

const (
	// Group and Version of the API.
	Group   = "logs.berth.dev"
	Version = "v1alpha1"
	// APIVersion is Group/Version.
	APIVersion = Group + "/" + Version
	// Kind of the only object.
	Kind = "LogShipperConfig"

	// Sink types.
	SinkOTLP          = "otlp"
	SinkLoki          = "loki"
	SinkElasticsearch = "elasticsearch"
)

// LogShipperConfig is the log shipper's configuration.
type LogShipperConfig struct {
	// APIVersion is logs.berth.dev/v1alpha1.
	APIVersion string `json:"apiVersion"`
	// Kind is LogShipperConfig.
	Kind string `json:"kind"`
	// Spec is the configuration.
	Spec LogShipperConfigSpec `json:"spec"`
}

// LogShipperConfigSpec is what the operator decides.
type LogShipperConfigSpec struct {
	// PodLogs is where the kubelet writes the containers' logs and how they are read.
	PodLogs PodLogs `json:"podLogs,omitzero"`
	// Journal, if set, ships the node's systemd journal too (kubelet, containerd, the agent), read with journalctl
	// from the sink's journal cursor.
	Journal *Journal `json:"journal,omitempty"`
	// Metrics, if set, adds the node's and its pods' metrics to the shipper's /metrics endpoint, for a scraper
	// (Prometheus, VictoriaMetrics) to read.
	Metrics *Metrics `json:"metrics,omitempty"`
	// StateDir holds each sink's checkpoint and dead-letter file (default /var/lib/berth/logs; a hostPath, so
	// that a restarted pod goes on where the last one stopped).
	StateDir string `json:"stateDir,omitempty"`
	// Sinks are where the logs go: at least one; each gets every line, with its own checkpoint, so a sink that is
	// down holds back none of the others.
	Sinks []Sink `json:"sinks"`
}

// PodLogs is the container log input.
type PodLogs struct {
	// Path is the kubelet's pod log directory (default /var/log/pods).
	Path string `json:"path,omitempty"`
	// MaxLineBytes caps a line joined from the runtime's partial records; a longer one is shipped in pieces
	// (default 1 MiB, between 16 KiB and 16 MiB).
	MaxLineBytes int `json:"maxLineBytes,omitempty"`
}

// Journal is the journal input.
type Journal struct {
	// HostRoot, if set, is the host's / as mounted in the pod (read-only; the DaemonSet mounts it at /host):
	// journalctl is run chrooted there, so the host's own journalctl reads the host's journal with the host's
	// libraries, whatever the host's distribution and systemd version (the container needs CAP_SYS_CHROOT).
	HostRoot string `json:"hostRoot,omitempty"`
	// Directory is the journal directory (journalctl -D, inside hostRoot if set; empty: the system journal).
	Directory string `json:"directory,omitempty"`
	// Command runs journalctl (default [journalctl], looked up in hostRoot's bin directories if hostRoot is set).
	Command []string `json:"command,omitempty"`
}

// Metrics are the node and pod metrics the shipper serves besides its own.
type Metrics struct {
	// Node runs node_exporter's collectors over the host: node_cpu_seconds_total, node_memory_MemTotal_bytes,
	// node_filesystem_avail_bytes and the rest of node_exporter's names.
	Node *NodeMetrics `json:"node,omitempty"`
	// Pods serves each pod's and container's CPU and memory from the kubelet's Summary API, under the names of the
	// kubelet's resource metrics (pod_cpu_usage_seconds_total, container_memory_working_set_bytes, …).
	Pods *PodMetrics `json:"pods,omitempty"`
}

// NodeMetrics configures node_exporter's collectors.
type NodeMetrics struct {
	// HostRoot is the host's / as mounted in the pod (node_exporter's --path.rootfs; its proc and sys are read
	// under it). Empty: the pod's own /, /proc and /sys.
	HostRoot string `json:"hostRoot,omitempty"`
	// Collectors are the node_exporter collectors to run, by name (cpu, meminfo, filesystem, diskstats, netdev,
	// loadavg, …; empty: node_exporter's default set). A name node_exporter does not know stops the shipper with
	// the name in its log.
	Collectors []string `json:"collectors,omitempty"`
}

// PodMetrics configures the kubelet's Summary API client.
type PodMetrics struct {
	// KubeletURL is the kubelet's base URL (default https://127.0.0.1:10250: the node's kubelet, from a pod on the
	// host network).
	KubeletURL string `json:"kubeletURL,omitempty"`
	// KubeletCertFile holds the certificate the kubelet must present: its own self-signed serving certificate,
	// pinned (default /host/var/lib/kubelet/pki/kubelet.crt, the host's, through the DaemonSet's read-only mount of
	// /), or the CA that signed it.
	KubeletCertFile string `json:"kubeletCertFile,omitempty"`
	// TokenFile is the bearer token the kubelet checks with the apiserver, which must allow get on nodes/stats
	// (default: the pod's ServiceAccount token).
	TokenFile string `json:"tokenFile,omitempty"`
}

// Sink is one backend.
type Sink struct {
	// Name identifies the sink in its checkpoint file, metrics and logs (a DNS label). Unique.
	Name string `json:"name"`
	// Type is otlp (OTLP/HTTP protobuf to <url>/v1/logs), loki (JSON push to <url>/loki/api/v1/push) or
	// elasticsearch (bulk API at <url>/_bulk).
	Type string `json:"type"`
	// URL is the backend's base URL (http or https; no user info, query or fragment: credentials go in headers).
	URL string `json:"url"`
	// Index is the Elasticsearch index (elasticsearch only; default berth-logs).
	Index string `json:"index,omitempty"`
	// Headers are sent with every request (VictoriaLogs' VL-* headers, a tenant header). Names must be valid
	// HTTP header names.
	Headers map[string]string `json:"headers,omitempty"`
	// HeadersFromFiles are headers whose values are files' contents (without a trailing newline), for credentials
	// that do not belong in the ConfigMap: a Secret's keys mounted in the pod (an Authorization header, an API
	// key). Each file is read for every request, so a rotated Secret is used without a restart. A name is in
	// headers or here, not both.
	HeadersFromFiles map[string]string `json:"headersFromFiles,omitempty"`
	// TLS is how the server of an https URL is trusted and, if it asks, what certificate the shipper shows.
	// Without it the system's roots are trusted (in deploy/logs.yaml, the host's, through SSL_CERT_DIR).
	TLS *TLS `json:"tls,omitempty"`
	// Batch bounds a request.
	Batch Batch `json:"batch,omitzero"`
	// Retry tunes the backoff between attempts; transient failures are retried for as long as it takes.
	Retry Retry `json:"retry,omitzero"`
}

// TLS is an https sink's trust and client certificate, as files (mounted from a ConfigMap or Secret).
type TLS struct {
	// CAFile is a PEM bundle of the CAs that sign the backend's certificate, trusted instead of the system's
	// roots (read at start).
	CAFile string `json:"caFile,omitempty"`
	// CertFile is a client certificate (PEM, with its chain), for a backend that asks for one; with keyFile. It
	// is read at each new connection, so a renewed certificate is used without a restart.
	CertFile string `json:"certFile,omitempty"`
	// KeyFile is certFile's private key (PEM).
	KeyFile string `json:"keyFile,omitempty"`
}

// Batch bounds one request.
type Batch struct {
	// Records per request (default 1000, at most 100000).
	Records int `json:"records,omitempty"`
	// Bytes of log lines per request (default 1 MiB, at most 64 MiB).
	Bytes int `json:"bytes,omitempty"`
	// Linger is how long a batch that is not full waits for more lines (default 1s, at most 1m).
	Linger metav1.Duration `json:"linger,omitzero"`
}

// Retry is the jittered exponential backoff.
type Retry struct {
	// Initial delay (default 500ms, at least 10ms).
	Initial metav1.Duration `json:"initial,omitzero"`
	// Max delay (default 30s, at least Initial, at most 10m).
	Max metav1.Duration `json:"max,omitzero"`
}
