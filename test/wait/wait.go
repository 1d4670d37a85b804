// Package wait is the tests' one way to wait on a condition: poll it until it holds or a deadline passes, and fail
// the test naming what never happened. Tests wait on conditions, never for a fixed time.
package wait

import (
	"testing"
	"time"
)

// Interval is how often For polls: short against the deadlines tests use (seconds), long against the cost of a
// condition (a syscall, a read of a small file, a lister lookup).
const Interval = 50 * time.Millisecond

// For polls cond every Interval until it holds; after d, it fails t with "no <what> after <d>".
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(Interval) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, d)
		}
	}
}
