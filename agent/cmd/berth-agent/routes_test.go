package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/nodeconfig"
)

// The route controller follows the applied NodeConfig: it runs for cni.mode bridge under the node's name, stops on
// a switch to none, starts again on a switch back, restarts for a new node name, and is left alone by a re-apply
// that changes neither; stop ends the running one and waits for it.
func TestRouteControllerFollowsTheAppliedConfig(t *testing.T) {
	var mu sync.Mutex
	var events []string
	r := &routeController{ctx: context.Background(), run: func(ctx context.Context, name string) {
		mu.Lock()
		events = append(events, "start "+name)
		mu.Unlock()
		<-ctx.Done()
		mu.Lock()
		events = append(events, "stop "+name)
		mu.Unlock()
	}}
	cfg := func(mode, name string) *nodeconfig.Config {
		c := &v1alpha1.NodeConfig{}
		c.Spec.CNI.Mode, c.Spec.Node.Name = mode, name
		nc, err := config.Internal(c, nodeconfig.Defaults{Hostname: "host-a"})
		if err != nil {
			t.Fatal(err)
		}
		return nc
	}
	// Each step waits for what it started to have started, so the log's order is the controller's.
	started := func(name string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			mu.Lock()
			ok := slices.Contains(events, "start "+name)
			mu.Unlock()
			if ok {
				return
			}
		}
		t.Fatalf("the controller for %s never started", name)
	}
	r.follow(cfg("bridge", ""))
	started("host-a")
	r.follow(cfg("bridge", "")) // a re-apply that changes nothing the controller uses
	r.follow(cfg("none", ""))
	r.follow(cfg("none", "node-7"))
	r.follow(cfg("bridge", "node-7"))
	started("node-7")
	r.follow(cfg("bridge", "node-8"))
	started("node-8")
	r.stop()
	r.stop() // safe to repeat
	want := []string{"start host-a", "stop host-a", "start node-7", "stop node-7", "start node-8", "stop node-8"}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
}
