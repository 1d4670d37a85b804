package ship_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"berth.dev/berth/agent/logship/deliver"
	"berth.dev/berth/agent/logship/ship"
	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/loki"
	"berth.dev/berth/test/logbackend"
)

func appendLines(t *testing.T, path, tag string, from, to int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "%s stdout F %s %05d\n", time.Now().UTC().Format(time.RFC3339Nano), tag, i)
	}
	if _, err := io.WriteString(f, b.String()); err != nil {
		t.Fatal(err)
	}
}

// Two pods' logs (one with a container restart: 0.log and 1.log), a third pod appearing while it runs, shipped
// through the Loki sink into a real VictoriaLogs: every line arrives once, with its pod's namespace, name and
// container and the node; a file outside the kubelet's layout is skipped.
func TestShipsEveryPod(t *testing.T) {
	vl := logbackend.StartVictoriaLogs(t)
	root := t.TempDir()
	a := filepath.Join(root, "demo_alpha_11111111-1111-1111-1111-111111111111", "web", "0.log")
	a1 := filepath.Join(root, "demo_alpha_11111111-1111-1111-1111-111111111111", "web", "1.log")
	b := filepath.Join(root, "kube-system_beta_22222222-2222-2222-2222-222222222222", "dns", "0.log")
	appendLines(t, a, "alpha", 0, 1500)
	appendLines(t, a1, "alpha-restarted", 0, 10)
	appendLines(t, b, "beta", 0, 700)
	appendLines(t, filepath.Join(root, "stray", "x", "0.log"), "stray", 0, 5)
	d, err := deliver.New(deliver.Config{Sink: loki.New(loki.Config{HTTP: sink.HTTP{URL: vl.URL + "/insert"}}), Checkpoint: filepath.Join(root, "..", "cp.json"),
		DeadLetter: filepath.Join(t.TempDir(), "dead.ndjson"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		// Meta stands in for podmeta (tested against a real apiserver in its package): alpha has a label.
		meta := func(uid types.UID) []sink.Attr {
			if uid == "11111111-1111-1111-1111-111111111111" {
				return []sink.Attr{{Key: "kubernetes.labels.app", Value: "alpha"}}
			}
			return nil
		}
		done <- ship.Run(ctx, ship.Config{Root: root, Deliverer: d, Node: "node-1", BatchRecords: 500, Linger: 100 * time.Millisecond, Meta: meta,
			Idle: 20 * time.Millisecond, Rescan: 50 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ship: %v", err)
		}
	}()
	vl.Count(t, `alpha -"alpha-restarted"`, 1500)
	c := filepath.Join(root, "demo_gamma_33333333-3333-3333-3333-333333333333", "app", "0.log")
	appendLines(t, c, "gamma", 0, 300)
	appendLines(t, a, "alpha", 1500, 1600)
	for query, want := range map[string]int{`alpha -"alpha-restarted"`: 1600, `"alpha-restarted"`: 10, `beta`: 700, `gamma`: 300} {
		got := vl.Count(t, query, want)
		seen := map[string]bool{}
		for _, e := range got {
			if seen[e["_msg"]] {
				t.Errorf("%q arrived twice", e["_msg"])
			}
			seen[e["_msg"]] = true
			if e["node"] != "node-1" || e["pod"] == "" || e["namespace"] == "" || e["container"] == "" {
				t.Fatalf("%q: fields %v", query, e)
			}
		}
	}
	// Everything else has arrived by now: the stray file's lines would have too.
	if got := vl.Query(t, `stray`); len(got) != 0 {
		t.Errorf("a file outside the kubelet's layout was shipped: %v", got)
	}
	if e := vl.Query(t, `alpha`)[0]; e["kubernetes_labels_app"] != "alpha" {
		t.Errorf("alpha's label: %v", e)
	}
	if e := vl.Query(t, `gamma`)[0]; e["pod"] != "gamma" || e["namespace"] != "demo" || e["container"] != "app" {
		t.Errorf("gamma's fields: %v", e)
	}
}
