// Package loki is the Loki push sink: JSON to `<url>/loki/api/v1/push`. The Kubernetes resource and the stream
// are the stream's labels (namespace, pod, container, node, stream: few values each, as Loki wants labels); other
// fields and the record key go as structured metadata. 429 and 5xx are retried, other codes refuse the batch.
package loki

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"berth.dev/berth/agent/logship/sink"
)

// labels are the record attributes that become stream labels, and their label names.
var labels = map[string]string{
	"kubernetes.namespace": "namespace",
	"kubernetes.pod":       "pod",
	"kubernetes.container": "container",
	"node":                 "node",
	"stream":               "stream",
}

// Config is where to send: URL is Loki's base (…/loki/api/v1/push is appended), or VictoriaLogs'
// http://host:9428/insert.
type Config struct{ sink.HTTP }

// Sink sends to one Loki push API.
type Sink struct{ cfg Config }

// New is a sink with cfg.
func New(cfg Config) *Sink { return &Sink{cfg: cfg} }

func (s *Sink) Name() string { return "loki" }

type stream struct {
	Stream map[string]string `json:"stream"`
	Values [][]any           `json:"values"`
}

// Body is the push request's JSON for batch: one stream per label set, in the order they first appear.
func Body(batch []sink.Record) ([]byte, error) {
	var streams []*stream
	index := map[string]*stream{}
	for _, r := range batch {
		ls := map[string]string{}
		meta := map[string]string{}
		var key strings.Builder
		for _, a := range r.Attrs {
			if name, ok := labels[a.Key]; ok {
				ls[name] = a.Value
				key.WriteString(name + "=" + a.Value + "\x00")
				continue
			}
			meta[labelName(a.Key)] = a.Value
		}
		if r.Key != "" {
			meta["log_record_uid"] = r.Key
		}
		st := index[key.String()]
		if st == nil {
			st = &stream{Stream: ls}
			index[key.String()] = st
			streams = append(streams, st)
		}
		v := []any{strconv.FormatInt(r.Time.UnixNano(), 10), r.Body}
		if len(meta) > 0 {
			v = append(v, meta)
		}
		st.Values = append(st.Values, v)
	}
	return json.Marshal(map[string]any{"streams": streams})
}

// labelName makes k a valid Loki label name ([a-zA-Z_][a-zA-Z0-9_]*).
func labelName(k string) string {
	b := []byte(k)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Send sends batch in one push request.
func (s *Sink) Send(ctx context.Context, batch []sink.Record) error {
	body, err := Body(batch)
	if err != nil {
		return fmt.Errorf("loki: %w", err)
	}
	resp, answer, err := s.cfg.Post(ctx, s.Name(), "/loki/api/v1/push", "application/json", body, 64<<10)
	if err != nil {
		return err
	}
	return sink.Status(s.Name(), resp, answer, len(batch))
}
