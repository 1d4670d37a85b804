package ship_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"berth.dev/berth/agent/logship/deliver"
	"berth.dev/berth/agent/logship/journal"
	"berth.dev/berth/agent/logship/ship"
	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/loki"
	"berth.dev/berth/test/logbackend"
	"berth.dev/berth/test/tier"
)

// Two pods' logs (one with a container restart: 0.log and 1.log), a third pod appearing while it runs, shipped
// through the Loki sink into a real VictoriaLogs: every line arrives once, with its pod's namespace, name and
// container and the node; a file outside the kubelet's layout is skipped.
func TestShipsEveryPod(t *testing.T) {
	vl := logbackend.StartVictoriaLogs(t)
	root := t.TempDir()
	a := filepath.Join(root, "demo_alpha_11111111-1111-1111-1111-111111111111", "web", "0.log")
	a1 := filepath.Join(root, "demo_alpha_11111111-1111-1111-1111-111111111111", "web", "1.log")
	b := filepath.Join(root, "kube-system_beta_22222222-2222-2222-2222-222222222222", "dns", "0.log")
	logbackend.AppendCRI(t, a, "alpha %05d", 0, 1500)
	logbackend.AppendCRI(t, a1, "alpha-restarted %05d", 0, 10)
	logbackend.AppendCRI(t, b, "beta %05d", 0, 700)
	logbackend.AppendCRI(t, filepath.Join(root, "stray", "x", "0.log"), "stray %05d", 0, 5)
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
	logbackend.AppendCRI(t, c, "gamma %05d", 0, 300)
	logbackend.AppendCRI(t, a, "alpha %05d", 1500, 1600)
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

// journalFile writes entries from..to as a real journal file in dir (systemd-journal-remote).
func journalFile(t *testing.T, dir, name string, from, to int) {
	t.Helper()
	var b strings.Builder
	at := time.Now().Add(-time.Hour)
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE=unit line %05d\n_SYSTEMD_UNIT=containerd.service\n\n",
			at.Add(time.Duration(i)*time.Millisecond).UnixMicro(), 1000+i, i)
	}
	cmd := exec.Command(tier.JournalRemoteBin, "--output="+filepath.Join(dir, name), "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("systemd-journal-remote: %v\n%s", err, out)
	}
}

// The journal beside the pods' logs, into a real VictoriaLogs: every entry once with its unit; a restarted shipper
// goes on after the journal cursor it committed, so entries written while it was down arrive and none twice.
func TestShipsTheJournal(t *testing.T) {
	tier.Present(t, tier.JournalRemote)
	vl := logbackend.StartVictoriaLogs(t)
	root, jdir, state := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "cp.json")
	journalFile(t, jdir, "a.journal", 0, 300)
	run := func(until func()) {
		t.Helper()
		d, err := deliver.New(deliver.Config{Sink: loki.New(loki.Config{HTTP: sink.HTTP{URL: vl.URL + "/insert"}}), Checkpoint: state,
			DeadLetter: filepath.Join(t.TempDir(), "dead.ndjson"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- ship.Run(ctx, ship.Config{Root: root, Deliverer: d, Node: "node-1", Linger: 100 * time.Millisecond, Idle: 20 * time.Millisecond,
				Journal: &journal.Config{Directory: jdir}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		}()
		until()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ship: %v", err)
		}
	}
	run(func() { vl.Count(t, `"unit line"`, 300) })
	journalFile(t, jdir, "b.journal", 300, 400)
	run(func() {
		for _, e := range vl.Count(t, `"unit line"`, 400) {
			if e["systemd_unit"] != "containerd.service" || e["node"] != "node-1" {
				t.Fatalf("fields %v", e)
			}
		}
	})
}
