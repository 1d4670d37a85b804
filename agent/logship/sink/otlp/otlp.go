// Package otlp is the OpenTelemetry logs sink: OTLP/HTTP with protobuf to `<url>/v1/logs`. Records are grouped by
// their Kubernetes resource (namespace, pod, container, node: the semantic conventions' k8s.* attributes); the
// stream and the record key go with each log record (log.iostream, log.record.uid). The answer is read as the
// specification says: 2xx taken (a partial success counts its rejected records, which are dropped for good),
// 429/502/503/504 retried with Retry-After, other codes refused for good.
package otlp

import (
	"context"
	"fmt"
	"net/http"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"

	"berth.dev/berth/agent/logship/sink"
)

// resourceKeys are the record attributes that name the resource (the rest go on each log record), and their OTLP
// names.
var resourceKeys = map[string]string{
	"kubernetes.namespace": "k8s.namespace.name",
	"kubernetes.pod":       "k8s.pod.name",
	"kubernetes.pod_uid":   "k8s.pod.uid",
	"kubernetes.container": "k8s.container.name",
	"node":                 "k8s.node.name",
}

// Config is where to send: URL is the OTLP/HTTP base (…/v1/logs is appended): a collector's
// http://host:4318, or VictoriaLogs' http://host:9428/insert/opentelemetry.
type Config struct{ sink.HTTP }

// Sink sends to one OTLP/HTTP endpoint.
type Sink struct{ cfg Config }

// New is a sink with cfg.
func New(cfg Config) *Sink { return &Sink{cfg: cfg} }

func (s *Sink) Name() string { return "otlp" }

// Request is the export request for batch.
func Request(batch []sink.Record) *collogs.ExportLogsServiceRequest {
	byResource := map[string]*logspb.ResourceLogs{}
	var order []*logspb.ResourceLogs
	for _, r := range batch {
		var resAttrs, attrs []*commonpb.KeyValue
		key := ""
		for _, a := range r.Attrs {
			if name, ok := resourceKeys[a.Key]; ok {
				resAttrs = append(resAttrs, kv(name, a.Value))
				key += name + "=" + a.Value + "\x00"
				continue
			}
			name := a.Key
			if name == "stream" {
				name = "log.iostream"
			}
			attrs = append(attrs, kv(name, a.Value))
		}
		if r.Key != "" {
			attrs = append(attrs, kv("log.record.uid", r.Key))
		}
		rl := byResource[key]
		if rl == nil {
			rl = &logspb.ResourceLogs{Resource: &resourcepb.Resource{Attributes: resAttrs},
				ScopeLogs: []*logspb.ScopeLogs{{Scope: &commonpb.InstrumentationScope{Name: "berth.dev/berth/agent/logship"}}}}
			byResource[key] = rl
			order = append(order, rl)
		}
		rl.ScopeLogs[0].LogRecords = append(rl.ScopeLogs[0].LogRecords, &logspb.LogRecord{
			TimeUnixNano:         uint64(r.Time.UnixNano()),
			ObservedTimeUnixNano: uint64(time.Now().UnixNano()),
			Body:                 &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: string(r.Body)}},
			Attributes:           attrs,
		})
	}
	return &collogs.ExportLogsServiceRequest{ResourceLogs: order}
}

func kv(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// Send sends batch in one export request.
func (s *Sink) Send(ctx context.Context, batch []sink.Record) error {
	body, err := proto.Marshal(Request(batch))
	if err != nil {
		return fmt.Errorf("otlp: %w", err)
	}
	resp, answer, err := s.cfg.Post(ctx, s.Name(), "/v1/logs", "application/x-protobuf", body, 4<<20)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		// The specification retries only 429, 502, 503 and 504; other codes are final.
		switch resp.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return sink.Status(s.Name(), resp, answer, len(batch))
		}
		resp.StatusCode = http.StatusBadRequest // final: every record refused
		return sink.Status(s.Name(), resp, answer, len(batch))
	}
	var out collogs.ExportLogsServiceResponse
	if len(answer) > 0 && resp.Header.Get("Content-Type") == "application/x-protobuf" {
		if err := proto.Unmarshal(answer, &out); err == nil && out.PartialSuccess != nil && out.PartialSuccess.RejectedLogRecords > 0 {
			return &sink.Error{Sink: s.Name(), Dropped: int(out.PartialSuccess.RejectedLogRecords),
				Err: fmt.Errorf("partial success: %d records rejected: %s", out.PartialSuccess.RejectedLogRecords, out.PartialSuccess.ErrorMessage)}
		}
	}
	return nil
}
