package otlp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/otlp"
	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/wait"
)

func records(n int) []sink.Record {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	out := make([]sink.Record, n)
	for i := range out {
		pod := fmt.Sprintf("hello-%d", i%2)
		out[i] = sink.Record{Time: at.Add(time.Duration(i) * time.Millisecond), Body: fmt.Sprintf("otlp line %04d", i),
			Attrs: []sink.Attr{{Key: "kubernetes.namespace", Value: "demo"}, {Key: "kubernetes.pod", Value: pod}, {Key: "stream", Value: "stderr"}},
			Key:   fmt.Sprintf("k-%d", i)}
	}
	return out
}

// Into a real VictoriaLogs through its OTLP/HTTP endpoint (protobuf): every record arrives with its body, time,
// resource (the pod) and attributes.
func TestIntoVictoriaLogs(t *testing.T) {
	vl := logbackend.StartVictoriaLogs(t)
	s := otlp.New(otlp.Config{HTTP: sink.HTTP{URL: vl.URL + "/insert/opentelemetry"}})
	if err := s.Send(context.Background(), records(300)); err != nil {
		t.Fatal(err)
	}
	arrived(t, vl, 300)
}

// Two pods' records make two resources, in the order they first appear.
func TestRequestGroupsByResource(t *testing.T) {
	req := otlp.Request(records(5))
	if len(req.ResourceLogs) != 2 || len(req.ResourceLogs[0].ScopeLogs[0].LogRecords) != 3 || len(req.ResourceLogs[1].ScopeLogs[0].LogRecords) != 2 {
		t.Fatalf("%d resources", len(req.ResourceLogs))
	}
}

// Records that share their fields (one container's stream, read together) and records with equal fields in
// another slice land in one resource; each record keeps its own body, time and key, and a record without a key
// has no log.record.uid.
func TestRequestSharedFields(t *testing.T) {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	fields := func(pod string) []sink.Attr {
		return []sink.Attr{{Key: "kubernetes.pod", Value: pod}, {Key: "node", Value: "node-1"}, {Key: "stream", Value: "stdout"},
			{Key: "kubernetes.labels.app", Value: pod + "-app"}}
	}
	a, b := fields("a"), fields("b")
	batch := []sink.Record{{Body: "a0", Attrs: a, Key: "k0"}, {Body: "a1", Attrs: a}, {Body: "b2", Attrs: b, Key: "k2"},
		{Body: "a3", Attrs: a, Key: "k3"}, {Body: "a4", Attrs: fields("a"), Key: "k4"}}
	for i := range batch {
		batch[i].Time = at.Add(time.Duration(i) * time.Second)
	}
	// Decoded as what a backend receives, an export request.
	wire, err := proto.Marshal(otlp.Request(batch))
	if err != nil {
		t.Fatal(err)
	}
	var req collogs.ExportLogsServiceRequest
	if err := proto.Unmarshal(wire, &req); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rl := range req.ResourceLogs {
		res := ""
		for _, kv := range rl.Resource.Attributes {
			res += kv.Key + "=" + kv.Value.GetStringValue() + " "
		}
		for _, lr := range rl.ScopeLogs[0].LogRecords {
			line := fmt.Sprintf("%s| t=%d", res, time.Unix(0, int64(lr.TimeUnixNano)).Sub(at)/time.Second)
			for _, kv := range lr.Attributes {
				line += " " + kv.Key + "=" + kv.Value.GetStringValue()
			}
			got[lr.Body.GetStringValue()] = line
		}
	}
	want := map[string]string{
		"a0": "k8s.pod.name=a k8s.node.name=node-1 | t=0 log.iostream=stdout kubernetes.labels.app=a-app log.record.uid=k0",
		"a1": "k8s.pod.name=a k8s.node.name=node-1 | t=1 log.iostream=stdout kubernetes.labels.app=a-app",
		"b2": "k8s.pod.name=b k8s.node.name=node-1 | t=2 log.iostream=stdout kubernetes.labels.app=b-app log.record.uid=k2",
		"a3": "k8s.pod.name=a k8s.node.name=node-1 | t=3 log.iostream=stdout kubernetes.labels.app=a-app log.record.uid=k3",
		"a4": "k8s.pod.name=a k8s.node.name=node-1 | t=4 log.iostream=stdout kubernetes.labels.app=a-app log.record.uid=k4",
	}
	for body, w := range want {
		if got[body] != w {
			t.Errorf("%s: %q\nwant %q", body, got[body], w)
		}
	}
	if n := len(otlp.Request(batch).ResourceLogs); n != 2 {
		t.Errorf("%d resources, want 2 (pods a and b)", n)
	}
}

// The answers the specification defines: a partial success drops its count for good; 429/502/503/504 retry (with
// Retry-After); other codes refuse the batch.
func TestAnswers(t *testing.T) {
	var status int
	var answer []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-protobuf")
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "3")
		}
		w.WriteHeader(status)
		w.Write(answer)
	}))
	defer srv.Close()
	s := otlp.New(otlp.Config{HTTP: sink.HTTP{URL: srv.URL}})
	send := func() *sink.Error {
		err := s.Send(context.Background(), records(4))
		var e *sink.Error
		if err != nil && !errors.As(err, &e) {
			t.Fatalf("%v is not a *sink.Error", err)
		}
		return e
	}
	partial, _ := proto.Marshal(&collogs.ExportLogsServiceResponse{PartialSuccess: &collogs.ExportLogsPartialSuccess{RejectedLogRecords: 2, ErrorMessage: "too old"}})
	status, answer = 200, partial
	if e := send(); e == nil || e.Retry || e.Dropped != 2 || !strings.Contains(e.Error(), "too old") {
		t.Errorf("partial success: %+v", e)
	}
	// A response with fields this client does not know around the partial success, and one that does not parse.
	unknown := protowire.AppendTag(nil, 7, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("later"))
	status, answer = 200, append(append(unknown, partial...), unknown...)
	if e := send(); e == nil || e.Dropped != 2 {
		t.Errorf("partial success among unknown fields: %+v", e)
	}
	status, answer = 200, partial[:len(partial)-3]
	if e := send(); e != nil {
		t.Errorf("a 200 whose body is cut short: %+v", e)
	}
	status, answer = 200, nil
	if e := send(); e != nil {
		t.Errorf("200: %+v", e)
	}
	status = 503
	if e := send(); e == nil || !e.Retry || e.RetryAfter != 3*time.Second {
		t.Errorf("503: %+v", e)
	}
	status = 500
	if e := send(); e == nil || e.Retry || len(e.Rejected) != 4 {
		t.Errorf("500 is final for OTLP: %+v", e)
	}
	// Refused credentials are retried (a Secret being rotated), a refused request is final.
	for _, code := range []int{401, 403} {
		status = code
		if e := send(); e == nil || !e.Retry {
			t.Errorf("%d: %+v, want retried", code, e)
		}
	}
	status = 400
	if e := send(); e == nil || e.Retry || len(e.Rejected) != 4 {
		t.Errorf("400: %+v, want final", e)
	}
}

// Into the OpenTelemetry Collector's OTLP receiver (the pinned build, tools/otelcol), which forwards to a real
// VictoriaLogs with its OTLP/HTTP exporter: the collector takes berth's export requests (a 200 with no partial
// rejection) and every record comes out the other side with its body, resource and attributes.
func TestThroughOpenTelemetryCollector(t *testing.T) {
	vl := logbackend.StartVictoriaLogs(t)
	otelcol := filepath.Join(toolbin.OtelCol.ForTest(t), "otelcol")
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "otelcol.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  otlphttp:
    endpoint: %s/insert/opentelemetry
    compression: none
    sending_queue: {enabled: true, wait_for_result: true}
service:
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
  pipelines:
    logs: {receivers: [otlp], exporters: [otlphttp]}
`, port, vl.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(otelcol, "--config", config)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("the collector's output:\n%s", out.String())
		}
	})
	s := otlp.New(otlp.Config{HTTP: sink.HTTP{URL: fmt.Sprintf("http://127.0.0.1:%d", port)}})
	// The receiver listens a moment after the process starts: a send that gets no answer is retried.
	wait.For(t, 30*time.Second, "the collector taking a batch", func() bool {
		err := s.Send(context.Background(), records(300))
		if err != nil && !sink.IsRetry(err) {
			t.Fatalf("the collector refused the batch: %v", err)
		}
		return err == nil
	})
	arrived(t, vl, 300)
}

// arrived checks that vl holds records(n), each with its body, time order, resource and attributes.
func arrived(t *testing.T, vl *logbackend.VictoriaLogs, n int) {
	t.Helper()
	got := vl.Count(t, `"otlp line" | sort by (_time)`, n)
	for i, e := range got {
		if want := fmt.Sprintf("otlp line %04d", i); e["_msg"] != want || e["k8s.pod.name"] != fmt.Sprintf("hello-%d", i%2) ||
			e["k8s.namespace.name"] != "demo" || e["log.iostream"] != "stderr" || e["log.record.uid"] != fmt.Sprintf("k-%d", i) {
			t.Fatalf("entry %d: %v; want %q with its resource and attributes", i, e, want)
		}
	}
}
