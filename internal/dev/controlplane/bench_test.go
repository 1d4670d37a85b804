package controlplane_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/controlplane"

	"berth.dev/berth/test/toolbin"
)

// BenchmarkControlPlaneStart measures a cold start with the binaries cached: PKI generation, etcd, the apiserver
// to /readyz ("readyz-s"), then the controller manager and scheduler, provisioning, and the first signed
// cluster-info ("up-s"). Stopping is not timed.
//
//	go test -run '^$' -bench ControlPlaneStart -benchtime 5x ./internal/dev/controlplane
func BenchmarkControlPlaneStart(b *testing.B) {
	bin := toolbin.Kubernetes.ForTest(b)
	var readyz, up time.Duration
	for b.Loop() {
		cp, err := controlplane.Start(context.Background(), controlplane.Config{Dir: b.TempDir(), BinDir: bin, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		readyz += cp.Timings.Readyz
		up += cp.Timings.Up
		if err := cp.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(readyz.Seconds()/float64(b.N), "readyz-s")
	b.ReportMetric(up.Seconds()/float64(b.N), "up-s")
}
