package probe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// A target goes down after Threshold consecutive failures (one failure is not enough), comes back at its first
// success, and stops being probed when it leaves the set. Changed fires on each transition.
func TestThresholdAndRecovery(t *testing.T) {
	var code atomic.Int32
	code.Store(http.StatusOK)
	var hits, failed atomic.Int32 // probes served, and those answered with a failure
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := code.Load()
		if c != http.StatusOK {
			failed.Add(1)
		}
		hits.Add(1)
		w.WriteHeader(int(c))
	}))
	defer srv.Close()
	changes := make(chan int32, 10) // the failures served when a change fired
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := New(ctx, Config{Interval: 20 * time.Millisecond, Threshold: 3, Changed: func() { changes <- failed.Load() }})
	url := srv.URL + "/healthz"
	p.Set([]string{url})
	waitHits := func(n int32) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); hits.Load() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("only %d probes", hits.Load())
			}
		}
	}
	waitHits(2)
	if p.Down(url) || !p.Known(url) {
		t.Fatal("a passing target is down or unknown")
	}
	code.Store(http.StatusServiceUnavailable)
	select {
	case n := <-changes:
		if n < 3 {
			t.Errorf("down after %d failed probes; the threshold is 3", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never went down")
	}
	if !p.Down(url) {
		t.Error("Changed fired but the target is not down")
	}
	code.Store(http.StatusOK)
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("never came back")
	}
	if p.Down(url) {
		t.Error("Changed fired but the target is still down")
	}
	p.Set(nil)
	if p.Known(url) {
		t.Error("a removed target is still known")
	}
}
