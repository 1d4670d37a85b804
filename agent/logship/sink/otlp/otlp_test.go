package otlp_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/protobuf/proto"

	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/otlp"
	"berth.dev/berth/test/logbackend"
)

func records(n int) []sink.Record {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	out := make([]sink.Record, n)
	for i := range out {
		pod := fmt.Sprintf("hello-%d", i%2)
		out[i] = sink.Record{Time: at.Add(time.Duration(i) * time.Millisecond), Body: []byte(fmt.Sprintf("otlp line %04d", i)),
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
	got := vl.Count(t, `"otlp line" | sort by (_time)`, 300)
	for i, e := range got {
		if want := fmt.Sprintf("otlp line %04d", i); e["_msg"] != want || e["k8s.pod.name"] != fmt.Sprintf("hello-%d", i%2) ||
			e["k8s.namespace.name"] != "demo" || e["log.iostream"] != "stderr" || e["log.record.uid"] != fmt.Sprintf("k-%d", i) {
			t.Fatalf("entry %d: %v; want %q with its resource and attributes", i, e, want)
		}
	}
}

// Two pods' records make two resources, in the order they first appear.
func TestRequestGroupsByResource(t *testing.T) {
	req := otlp.Request(records(5))
	if len(req.ResourceLogs) != 2 || len(req.ResourceLogs[0].ScopeLogs[0].LogRecords) != 3 || len(req.ResourceLogs[1].ScopeLogs[0].LogRecords) != 2 {
		t.Fatalf("%d resources", len(req.ResourceLogs))
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
	if e := send(); e == nil || e.Retry || e.Dropped != 2 {
		t.Errorf("partial success: %+v", e)
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
}
