package ship_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"berth.dev/berth/agent/logship/deliver"
	"berth.dev/berth/agent/logship/ship"
	"berth.dev/berth/agent/logship/sink"
	"berth.dev/berth/agent/logship/sink/otlp"
	"berth.dev/berth/test/logbackend"
)

// go test -run '^$' -bench ShipOTLP -benchmem ./agent/logship/ship
//
// The pipeline in one process, for profiling (-cpuprofile, -memprofile): a backlog of container log lines in the
// CRI format read, turned into records with the pod's fields and delivered as OTLP/HTTP protobuf to a local
// backend that decodes and acknowledges every request, each batch's positions committed after it. The shipper
// against the OpenTelemetry Collector, as processes, is BenchmarkShipVsCollector in agent/cmd/berth-agent.
func BenchmarkShipOTLP(b *testing.B) {
	for _, c := range []struct {
		name        string
		size, lines int
	}{{"100B", 100, 100_000}, {"1KiB", 1024, 25_000}} {
		b.Run(c.name, func(b *testing.B) {
			backend := logbackend.StartOTLPCounter()
			defer backend.Close()
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			var shipped int64
			for range b.N {
				b.StopTimer()
				root := b.TempDir()
				logbackend.AppendPadded(b, filepath.Join(root, "demo_web_11111111-1111-1111-1111-111111111111", "app", "0.log"), 0, c.lines, c.size)
				d, err := deliver.New(deliver.Config{Sink: otlp.New(otlp.Config{HTTP: sink.HTTP{URL: backend.URL}}),
					Checkpoint: filepath.Join(root, "cp.json"), DeadLetter: filepath.Join(root, "dead.ndjson"), Log: quiet})
				if err != nil {
					b.Fatal(err)
				}
				reached := backend.Await(shipped + int64(c.lines))
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				b.StartTimer()
				go func() {
					done <- ship.Run(ctx, ship.Config{Root: root, Deliverer: d, Node: "node-1", Log: quiet,
						Idle: 10 * time.Millisecond, Linger: 50 * time.Millisecond})
				}()
				select {
				case <-reached:
				case <-time.After(5 * time.Minute):
					b.Fatalf("the backend has %d of %d lines after 5 minutes", backend.Records.Load()-shipped, c.lines)
				}
				b.StopTimer()
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				shipped += int64(c.lines)
			}
			b.ReportMetric(float64(c.lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
			b.SetBytes(int64(c.lines * c.size))
		})
	}
}
