package nodeimage

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
)

// A second bake of the same directory waits for the first: its lock is refused while the first holds it (here the
// waiter's context is already over, so it gives up at the first refusal) and granted once the first lets go.
func TestLockIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.lock")
	log := slog.New(slog.DiscardHandler)
	unlock, err := lock(context.Background(), path, log)
	if err != nil {
		t.Fatal(err)
	}
	over, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lock(over, path, log); !errors.Is(err, context.Canceled) {
		t.Fatalf("second lock while the first is held: %v, want it to wait (and give up with its context)", err)
	}
	unlock()
	unlock2, err := lock(over, path, log)
	if err != nil {
		t.Fatalf("lock after the first let go: %v", err)
	}
	unlock2()
}
