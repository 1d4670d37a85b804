package esbulk_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/esbulk"
	"berth.dev/berth/test/logbackend"
)

func records(n int, tag string) []sink.Record {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	out := make([]sink.Record, n)
	for i := range out {
		out[i] = sink.Record{Time: at.Add(time.Duration(i) * time.Millisecond), Body: fmt.Sprintf("%s line %04d", tag, i),
			Attrs: []sink.Attr{{Key: "kubernetes.namespace", Value: "demo"}, {Key: "kubernetes.pod", Value: "hello-1"}, {Key: "stream", Value: "stdout"}},
			Key:   fmt.Sprintf("dev1-ino2-%d", i*100)}
	}
	return out
}

// Into a real VictoriaLogs through its Elasticsearch bulk API: every record arrives with its time, message and
// fields.
func TestIntoVictoriaLogs(t *testing.T) {
	vl := logbackend.StartVictoriaLogs(t)
	s := esbulk.New(esbulk.Config{Index: "berth", HTTP: sink.HTTP{URL: vl.URL + "/insert/elasticsearch",
		Header: http.Header{"VL-Msg-Field": {"message"}, "VL-Time-Field": {"@timestamp"}, "VL-Stream-Fields": {"kubernetes.namespace,kubernetes.pod"}}}})
	if err := s.Send(context.Background(), records(500, "bulk")); err != nil {
		t.Fatal(err)
	}
	got := vl.Count(t, `"bulk line" | sort by (_time)`, 500)
	for i, e := range got {
		if want := fmt.Sprintf("bulk line %04d", i); e["_msg"] != want || e["kubernetes.pod"] != "hello-1" || e["stream"] != "stdout" {
			t.Fatalf("entry %d: %v; want %q with its fields", i, e, want)
		}
	}
	if got[0]["_time"] != "2026-12-03T12:00:00Z" {
		t.Errorf("the first entry's time: %q", got[0]["_time"])
	}
}

// The answer decides what is taken: a refused request is retried as a whole (5xx, 429 with Retry-After) or
// refused for good (4xx); a 200 whose items report failures has them sent again (429, 5xx) or dead-lettered, and
// 409 (already there under its _id) counts as taken; an unreadable 200 is retried, never counted as taken.
func TestAnswers(t *testing.T) {
	var status int
	var answer string
	var header http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		fmt.Fprint(w, answer)
	}))
	defer srv.Close()
	s := esbulk.New(esbulk.Config{HTTP: sink.HTTP{URL: srv.URL}, Index: "x"})
	send := func() *sink.Error {
		t.Helper()
		err := s.Send(context.Background(), records(3, "a"))
		if err == nil {
			return nil
		}
		var e *sink.Error
		if !errors.As(err, &e) {
			t.Fatalf("%v is not a *sink.Error", err)
		}
		return e
	}
	status, answer = 200, `{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":201}},{"create":{"status":201}}]}`
	if e := send(); e != nil {
		t.Errorf("all taken: %v", e)
	}
	status, answer = 200, `{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":429}},{"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}`
	if e := send(); e == nil || e.Retry || fmt.Sprint(e.Again) != "[1]" || len(e.Rejected) != 1 || e.Rejected[2] == "" {
		t.Errorf("per item: %+v", e)
	}
	status, answer = 200, `{"errors":true,"items":[{"create":{"status":409}},{"create":{"status":201}},{"create":{"status":201}}]}`
	if e := send(); e != nil {
		t.Errorf("409 is a record already taken: %v", e)
	}
	status, answer = 200, `<html>proxy</html>`
	if e := send(); e == nil || !e.Retry {
		t.Errorf("an unreadable 200: %+v", e)
	}
	status, answer, header = 429, "slow down", http.Header{"Retry-After": {"7"}}
	if e := send(); e == nil || !e.Retry || e.RetryAfter != 7*time.Second {
		t.Errorf("429: %+v", e)
	}
	status, answer, header = 503, "", nil
	if e := send(); e == nil || !e.Retry {
		t.Errorf("503: %+v", e)
	}
	status, answer = 400, "bad request"
	if e := send(); e == nil || e.Retry || len(e.Rejected) != 3 {
		t.Errorf("400: %+v", e)
	}
	srv.Close()
	if e := send(); e == nil || !e.Retry {
		t.Errorf("a refused connection: %+v", e)
	}
}
