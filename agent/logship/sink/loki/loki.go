// Package loki is the Loki push sink: JSON to `<url>/loki/api/v1/push`. The Kubernetes resource and the stream
// are the stream's labels (namespace, pod, container, node, stream: few values each, as Loki wants labels); other
// fields and the record key go as structured metadata. 429 and 5xx are retried, other codes refuse the batch.
package loki

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

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

// Config is where to send.
type Config struct {
	// URL is Loki's base (…/loki/api/v1/push is appended), or VictoriaLogs' http://host:9428/insert.
	URL    string
	Header http.Header
	Client *http.Client
}

// Sink sends to one Loki push API.
type Sink struct{ cfg Config }

// New is a sink with cfg (Client defaults to one with a 30 s timeout).
func New(cfg Config) *Sink {
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	return &Sink{cfg: cfg}
}

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
		v := []any{strconv.FormatInt(r.Time.UnixNano(), 10), string(r.Body)}
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL+"/loki/api/v1/push", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("loki: %w", err)
	}
	for k, v := range s.cfg.Header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return sink.Transient(s.Name(), err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return sink.Status(s.Name(), resp, answer, len(batch))
}
