package mountsys

import (
	"context"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// An interrupted call is made again until it does something else; any other error is returned at once; a context
// that ends stops the retries with the call's last error.
func TestRetry(t *testing.T) {
	calls := 0
	err := Retry(context.Background(), func() error {
		if calls++; calls <= 2 {
			return unix.EINTR
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("two interruptions then success: %v after %d calls, want nil after 3", err, calls)
	}
	calls = 0
	err = Retry(context.Background(), func() error { calls++; return unix.EBUSY })
	if !errors.Is(err, unix.EBUSY) || calls != 1 {
		t.Errorf("EBUSY: %v after %d calls, want EBUSY after 1", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = Retry(ctx, func() error {
		if calls++; calls == 3 {
			cancel()
		}
		return unix.EINTR
	})
	if !errors.Is(err, unix.EINTR) || calls != 3 {
		t.Errorf("interrupted until the context ends: %v after %d calls, want EINTR after 3", err, calls)
	}
}
