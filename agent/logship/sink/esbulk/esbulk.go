// Package esbulk is the Elasticsearch bulk sink: NDJSON to `<url>/_bulk`, one create action per record, with the
// record's key as the document _id, so that a resent batch does not index a record twice. The answer's per-item
// status is checked even when the request got a 200 (the bulk API reports refusals per item): 429 and 5xx items
// are sent again, other refusals are dead letters.
package esbulk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"berth.dev/berth/agent/logship/sink"
)

// Config is where and how to send.
type Config struct {
	// URL (in HTTP) is the bulk API's base (…/_bulk is appended): an Elasticsearch or OpenSearch URL, or
	// VictoriaLogs' http://host:9428/insert/elasticsearch; Header is sent with every request (VictoriaLogs'
	// VL-Msg-Field and friends, an Authorization).
	sink.HTTP
	// Index the documents go to.
	Index string
}

// Sink sends to one bulk API.
type Sink struct{ cfg Config }

// New is a sink with cfg.
func New(cfg Config) *Sink { return &Sink{cfg: cfg} }

func (s *Sink) Name() string { return "esbulk" }

// Send sends batch in one bulk request.
func (s *Sink) Send(ctx context.Context, batch []sink.Record) error {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	for _, r := range batch {
		action := map[string]map[string]string{"create": {"_index": s.cfg.Index}}
		if r.Key != "" {
			action["create"]["_id"] = r.Key
		}
		doc := make(map[string]string, len(r.Attrs)+2)
		for _, a := range r.Attrs {
			doc[a.Key] = a.Value
		}
		doc["@timestamp"] = r.Time.UTC().Format(time.RFC3339Nano)
		doc["message"] = r.Body
		if err := enc.Encode(action); err != nil {
			return err
		}
		if err := enc.Encode(doc); err != nil {
			return err
		}
	}
	resp, answer, err := s.cfg.Post(ctx, s.Name(), "/_bulk", "application/x-ndjson", body.Bytes(), 64<<20)
	if err != nil {
		return err
	}
	if err := sink.Status(s.Name(), resp, answer, len(batch)); err != nil {
		return err
	}
	return s.items(answer, len(batch))
}

// items reads the bulk answer's per-item results.
func (s *Sink) items(answer []byte, n int) error {
	var res struct {
		Errors bool `json:"errors"`
		Items  []map[string]struct {
			Status int             `json:"status"`
			Error  json.RawMessage `json:"error"`
		} `json:"items"`
	}
	if err := json.Unmarshal(answer, &res); err != nil {
		// A 2xx the sink cannot read: it cannot tell what was taken, so all of it goes again.
		return sink.Transient(s.Name(), fmt.Errorf("an unreadable bulk answer: %w", err))
	}
	if !res.Errors {
		return nil
	}
	if len(res.Items) != n {
		return sink.Transient(s.Name(), fmt.Errorf("the bulk answer has %d items for %d records", len(res.Items), n))
	}
	e := &sink.Error{Sink: s.Name(), Rejected: map[int]string{}}
	for i, item := range res.Items {
		for _, r := range item {
			switch {
			case r.Status >= 200 && r.Status < 300, r.Status == http.StatusConflict:
				// Taken, or already there under its _id (a resent record).
			case r.Status == http.StatusTooManyRequests || r.Status >= 500:
				e.Again = append(e.Again, i)
			default:
				e.Rejected[i] = fmt.Sprintf("status %d: %s", r.Status, r.Error)
			}
		}
	}
	if len(e.Again) == 0 && len(e.Rejected) == 0 {
		return nil
	}
	e.Err = errors.New("the bulk answer refused some items")
	return e
}

func all(n int, reason string) map[int]string {
	m := make(map[int]string, n)
	for i := range n {
		m[i] = reason
	}
	return m
}
