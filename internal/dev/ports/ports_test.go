package ports

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// A picked port is free (it can be listened on) and below the kernel's ephemeral range, where no connect() or
// listen on port 0 takes it.
func TestFreeIsBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow("/proc/sys/net/ipv4/ip_local_port_range")
	for range 20 {
		p, err := Free()
		if err != nil {
			t.Fatal(err)
		}
		if low-floor >= 1000 && (p < floor || p >= low) {
			t.Errorf("Free() = %d, want a port in [%d, %d)", p, floor, low)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("the picked port %d: %v", p, err)
		}
		l.Close()
	}
}

func TestEphemeralLow(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]int{"32768\t60999\n": 32768, "40000 50000": 40000, "": 32768, "x y": 32768, "0 10": 32768} {
		p := filepath.Join(dir, "range")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := ephemeralLow(p); got != want {
			t.Errorf("ephemeralLow(%q) = %d, want %d", content, got, want)
		}
	}
	if got := ephemeralLow(filepath.Join(dir, "missing")); got != 32768 {
		t.Errorf("ephemeralLow of a missing file = %d", got)
	}
}
