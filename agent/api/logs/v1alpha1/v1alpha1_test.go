package v1alpha1

import (
	"strings"
	"testing"
)

const valid = `apiVersion: logs.berth.dev/v1alpha1
kind: LogShipperConfig
spec:
  sinks:
  - name: analytics
    type: otlp
    url: http://10.88.0.1:9428/insert/opentelemetry
  - name: search
    type: elasticsearch
    url: https://logs.example.com
    headers:
      X-Tenant: team-a
    headersFromFiles:
      Authorization: /etc/berth/logs-secrets/authorization
    tls: {caFile: /etc/berth/logs-secrets/ca.pem, certFile: /etc/berth/logs-secrets/tls.crt, keyFile: /etc/berth/logs-secrets/tls.key}
    batch: {records: 500, linger: 2s}
  metrics:
    node: {hostRoot: /host, collectors: [cpu, meminfo]}
    pods: {}
`

func TestValidAndDefaults(t *testing.T) {
	c, err := Decode([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.Validate(); len(errs) != 0 {
		t.Fatalf("valid config: %v", errs)
	}
	d := c.Defaulted()
	if d.PodLogs.Path != "/var/log/pods" || d.StateDir != "/var/lib/berth/logs" || d.Sinks[1].Index != "berth-logs" ||
		d.Sinks[0].Batch.Records != 1000 || d.Sinks[1].Batch.Records != 500 || d.Sinks[1].Batch.Linger.Duration.String() != "2s" {
		t.Errorf("defaults: %+v", d)
	}
	if p := d.Metrics.Pods; p.KubeletURL != DefaultKubeletURL || p.KubeletCertFile != DefaultKubeletCertFile || p.TokenFile != DefaultTokenFile {
		t.Errorf("metrics.pods defaults: %+v", p)
	}
	if c.Spec.Sinks[1].Index != "" || c.Spec.Metrics.Pods.KubeletURL != "" {
		t.Error("Defaulted changed the config it was called on")
	}
}

// Every problem at once, each with its path; credentials in a URL are never echoed.
func TestEveryProblemNamed(t *testing.T) {
	c, err := Decode([]byte(`apiVersion: logs.berth.dev/v1alpha1
kind: LogShipperConfig
spec:
  podLogs: {path: var/log/pods, maxLineBytes: 10}
  stateDir: /var/lib/../lib/berth
  journal: {hostRoot: host/, directory: run/log/journal, command: [bin/journalctl]}
  metrics:
    node: {hostRoot: host, collectors: [cpu, "CPU", cpu]}
    pods: {kubeletURL: "http://127.0.0.1:10255", kubeletCertFile: kubelet.crt, tokenFile: /a/../token}
  sinks:
  - name: Bad_Name
    type: kafka
    url: ftp://x
  - name: dup
    type: loki
    url: http://user:hunter2@loki:3100
    index: nope
    headers: {"Bad Header": x, Content-Type: text/plain}
  - name: dup
    type: otlp
    url: http://c:4318?x=1
    batch: {records: -1, bytes: 100000000, linger: 2m}
    retry: {initial: 1ms, max: 1h}
  - name: secrets
    type: otlp
    url: http://plain:4318
    headers: {X-Tenant: a}
    headersFromFiles: {x-tenant: /run/secrets/tenant, Authorization: token, Content-Length: /x}
    tls: {caFile: ca.pem, certFile: /c.pem}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := c.Validate().ToAggregate().Error()
	for _, want := range []string{
		"spec.podLogs.path", "spec.podLogs.maxLineBytes", "spec.journal.hostRoot", "spec.journal.directory", "spec.journal.command[0]",
		"spec.metrics.node.hostRoot", "spec.metrics.node.collectors[1]", "spec.metrics.node.collectors[2]: Duplicate", "spec.metrics.pods.kubeletURL",
		"spec.metrics.pods.kubeletCertFile", "spec.metrics.pods.tokenFile", "spec.stateDir", "spec.sinks[0].name", "spec.sinks[0].type: Unsupported value: \"kafka\"",
		"spec.sinks[0].url", "spec.sinks[1].index: Forbidden", "spec.sinks[1].headers[Bad Header]", "spec.sinks[1].headers[Content-Type]: Forbidden",
		"spec.sinks[2].name: Duplicate", "spec.sinks[2].url", "spec.sinks[2].batch.records", "spec.sinks[2].batch.bytes",
		"spec.sinks[2].batch.linger", "spec.sinks[2].retry.initial", "spec.sinks[2].retry.max", `spec.sinks[1].url: Invalid value: "http://user:xxxxx@loki:3100"`,
		"spec.sinks[3].headersFromFiles[x-tenant]: Duplicate", `spec.sinks[3].headersFromFiles[Authorization]: Invalid value: "token"`,
		"spec.sinks[3].headersFromFiles[Content-Length]: Forbidden", "spec.sinks[3].tls: Forbidden: only for an https URL",
		"spec.sinks[3].tls.caFile", "spec.sinks[3].tls.keyFile: Required",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "hunter2") {
		t.Errorf("the password is echoed: %s", got)
	}
	if _, err := Decode([]byte("apiVersion: logs.berth.dev/v1alpha1\nkind: LogShipperConfig\nspec:\n  sinkz: []\n  sinks: []\n")); err == nil || !strings.Contains(err.Error(), "sinkz") {
		t.Errorf("an unknown field: %v", err)
	}
}
