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

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protowire"
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

// Request is the export request for batch (as logs.v1.LogsData, which is the export request on the wire: both are
// field 1, repeated ResourceLogs; the collector service's package would link gRPC in for its name only). Records that share their fields (one container's stream, read
// together) share their resource and attributes in the request, which is built of a few slabs, not objects per
// record.
func Request(batch []sink.Record) *logspb.LogsData {
	observed := uint64(time.Now().UnixNano())
	recs := make([]logspb.LogRecord, len(batch))
	bodies := make([]commonpb.AnyValue, len(batch))
	strs := make([]commonpb.AnyValue_StringValue, 2*len(batch))
	uids := make([]commonpb.KeyValue, len(batch))
	uidValues := make([]commonpb.AnyValue, len(batch))
	var slab []*commonpb.KeyValue // each record's attributes, sliced from it
	byResource := map[string]*logspb.ResourceLogs{}
	var order []*logspb.ResourceLogs
	var last struct {
		attrs []sink.Attr
		rl    *logspb.ResourceLogs
		kvs   []*commonpb.KeyValue
	}
	for i, r := range batch {
		if i == 0 || !same(r.Attrs, last.attrs) {
			var resAttrs []*commonpb.KeyValue
			last.attrs, last.kvs = r.Attrs, nil
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
				last.kvs = append(last.kvs, kv(name, a.Value))
			}
			last.rl = byResource[key]
			if last.rl == nil {
				last.rl = &logspb.ResourceLogs{Resource: &resourcepb.Resource{Attributes: resAttrs},
					ScopeLogs: []*logspb.ScopeLogs{{Scope: &commonpb.InstrumentationScope{Name: "berth.dev/berth/agent/logship"}}}}
				byResource[key] = last.rl
				order = append(order, last.rl)
			}
		}
		from := len(slab)
		slab = append(slab, last.kvs...)
		if r.Key != "" {
			strs[2*i+1].StringValue = r.Key
			uidValues[i].Value = &strs[2*i+1]
			uids[i].Key, uids[i].Value = "log.record.uid", &uidValues[i]
			slab = append(slab, &uids[i])
		}
		strs[2*i].StringValue = r.Body
		bodies[i].Value = &strs[2*i]
		rec := &recs[i]
		rec.TimeUnixNano, rec.ObservedTimeUnixNano = uint64(r.Time.UnixNano()), observed
		rec.Body, rec.Attributes = &bodies[i], slab[from:len(slab):len(slab)]
		sl := last.rl.ScopeLogs[0]
		sl.LogRecords = append(sl.LogRecords, rec)
	}
	return &logspb.LogsData{ResourceLogs: order}
}

// same reports whether a and b are the same slice (the fields records read together share).
func same(a, b []sink.Attr) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
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
		// The specification retries only 429, 502, 503 and 504, other codes being final; berth retries 401 and 403
		// too (sink.Status: the credentials were refused, not the records).
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return sink.Status(s.Name(), resp, answer, len(batch))
		}
		resp.StatusCode = http.StatusBadRequest // final: every record refused
		return sink.Status(s.Name(), resp, answer, len(batch))
	}
	if len(answer) > 0 && resp.Header.Get("Content-Type") == "application/x-protobuf" {
		if rejected, msg := partialSuccess(answer); rejected > 0 {
			return &sink.Error{Sink: s.Name(), Dropped: int(rejected), Err: fmt.Errorf("partial success: %d records rejected: %s", rejected, msg)}
		}
	}
	return nil
}

// partialSuccess reads an ExportLogsServiceResponse: field 1, partial_success, a message of rejected_log_records
// (field 1, int64) and error_message (field 2, string). An answer that does not parse says nothing was rejected:
// the backend answered 2xx.
func partialSuccess(b []byte) (rejected int64, msg string) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, ""
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return 0, ""
			}
			b = b[n:]
			continue
		}
		ps, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return 0, ""
		}
		b = b[n:]
		for len(ps) > 0 {
			num, typ, n := protowire.ConsumeTag(ps)
			if n < 0 {
				return 0, ""
			}
			ps = ps[n:]
			switch {
			case num == 1 && typ == protowire.VarintType:
				v, n := protowire.ConsumeVarint(ps)
				if n < 0 {
					return 0, ""
				}
				rejected, ps = int64(v), ps[n:]
			case num == 2 && typ == protowire.BytesType:
				v, n := protowire.ConsumeBytes(ps)
				if n < 0 {
					return 0, ""
				}
				msg, ps = string(v), ps[n:]
			default:
				if n = protowire.ConsumeFieldValue(num, typ, ps); n < 0 {
					return 0, ""
				}
				ps = ps[n:]
			}
		}
	}
	return rejected, msg
}
