package loki_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/loki"
	"berth.dev/berth/test/logbackend"
)

func records(n int) []sink.Record {
	at := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	out := make([]sink.Record, n)
	for i := range out {
		out[i] = sink.Record{Time: at.Add(time.Duration(i) * time.Millisecond), Body: fmt.Sprintf("loki line %04d", i),
			Attrs: []sink.Attr{{Key: "kubernetes.namespace", Value: "demo"}, {Key: "kubernetes.pod", Value: fmt.Sprintf("hello-%d", i%2)},
				{Key: "stream", Value: "stdout"}, {Key: "app.kubernetes.io/name", Value: "hello"}},
			Key: fmt.Sprintf("k-%d", i)}
	}
	return out
}

// Into a real VictoriaLogs through its Loki push endpoint: every record arrives with its labels and metadata.
func TestIntoVictoriaLogs(t *testing.T) {
	vl := logbackend.StartVictoriaLogs(t)
	s := loki.New(loki.Config{HTTP: sink.HTTP{URL: vl.URL + "/insert"}})
	if err := s.Send(context.Background(), records(300)); err != nil {
		t.Fatal(err)
	}
	got := vl.Count(t, `"loki line" | sort by (_time)`, 300)
	for i, e := range got {
		if want := fmt.Sprintf("loki line %04d", i); e["_msg"] != want || e["pod"] != fmt.Sprintf("hello-%d", i%2) || e["namespace"] != "demo" || e["stream"] != "stdout" {
			t.Fatalf("entry %d: %v; want %q with its labels", i, e, want)
		}
	}
}

// Labels are the resource and the stream; other fields are structured metadata under valid label names.
func TestBody(t *testing.T) {
	b, err := loki.Body(records(3))
	if err != nil {
		t.Fatal(err)
	}
	var req struct {
		Streams []struct {
			Stream map[string]string `json:"stream"`
			Values [][]any           `json:"values"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if len(req.Streams) != 2 || len(req.Streams[0].Values) != 2 || req.Streams[0].Stream["pod"] != "hello-0" {
		t.Fatalf("%s", b)
	}
	meta, _ := req.Streams[0].Values[0][2].(map[string]any)
	if meta["app_kubernetes_io_name"] != "hello" || meta["log_record_uid"] != "k-0" || req.Streams[0].Values[0][0] != fmt.Sprint(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC).UnixNano()) {
		t.Errorf("first value %v", req.Streams[0].Values[0])
	}
}
