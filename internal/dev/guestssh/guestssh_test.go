package guestssh

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A guest whose sshd closes connections before its greeting (a loaded guest, or one still booting) is asked again
// until the deadline; the error then is ssh's own.
func TestRunAsksAgainWhileUnreached(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	key, _, err := NewKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	_, err = Target{Key: key, Port: ln.Addr().(*net.TCPAddr).Port}.Run(ctx, "true", strings.NewReader("input"))
	if err == nil || !strings.Contains(err.Error(), "exit status 255") {
		t.Fatalf("Run against a server that never greets: %v", err)
	}
	if n := accepted.Load(); n < 2 {
		t.Errorf("ssh connected %d time(s) in 4 s, want it asked again", n)
	}
}
