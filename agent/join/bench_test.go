package join_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"berth.dev/berth/agent/join"
)

// BenchmarkJoinHostTier measures a fresh join in the host tier, split the way docs/benchmarks.md reports it:
// agent start → kubelet started, and kubelet started → Node Ready. Each iteration joins a new node.
//
//	go test -run XXX -bench JoinHostTier -benchtime 5x ./agent/join/
func BenchmarkJoinHostTier(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, ji, imgs := cluster(b)
	var toKubelet, toReady, total time.Duration
	for i := 0; b.Loop(); i++ {
		name := fmt.Sprintf("bench-%d", i)
		b.StopTimer()
		h := prepare(b, ctx, name, imgs)
		h.cfg.NodeConfig = h.load(b, map[string]string{"10-user-data.yaml": nodeConfig(ji, name, string(ji.CACertPin))})
		b.StartTimer()
		st, err := join.Run(ctx, h.cfg)
		if err != nil {
			b.Fatalf("join: %v\n%s", err, st.Format())
		}
		var kubeletStarted, readyAt time.Time
		for _, p := range st.Phases {
			switch p.Name {
			case "kubelet":
				kubeletStarted = p.Started.Add(p.Duration)
			case "ready":
				readyAt = p.Started.Add(p.Duration)
			}
		}
		toKubelet += kubeletStarted.Sub(st.Started)
		toReady += readyAt.Sub(kubeletStarted)
		total += st.Finished.Sub(st.Started)
	}
	n := time.Duration(b.N)
	b.ReportMetric(float64((toKubelet / n).Milliseconds()), "ms-start-to-kubelet")
	b.ReportMetric(float64((toReady / n).Milliseconds()), "ms-kubelet-to-ready")
	b.ReportMetric(float64((total / n).Milliseconds()), "ms-total")
}
