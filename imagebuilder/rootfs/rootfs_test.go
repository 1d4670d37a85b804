package rootfs

import (
	"testing"
	"time"
)

// The max age decides reuse, and only it: the key ignores it, so a stale tarball is rebuilt in place.
func TestMaxAge(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	week := 7 * 24 * time.Hour
	for _, c := range []struct {
		maxAge time.Duration
		age    time.Duration
		fresh  bool
	}{
		{0, 400 * 24 * time.Hour, true},
		{week, 6 * 24 * time.Hour, true},
		{week, week, false},
		{week, 30 * 24 * time.Hour, false},
	} {
		s := Spec{Suite: "bookworm", MaxAge: c.maxAge}
		if got := s.fresh(now.Add(-c.age), now); got != c.fresh {
			t.Errorf("max age %v, built %v ago: fresh = %v, want %v", c.maxAge, c.age, got, c.fresh)
		}
	}
	a, b := Spec{Suite: "bookworm", Packages: []string{"x"}}, Spec{Suite: "bookworm", Packages: []string{"x"}, MaxAge: week}
	if a.Key("mmdebstrap 1.3.5") != b.Key("mmdebstrap 1.3.5") {
		t.Error("the max age changes the cache key")
	}
}
