package netns

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"berth.dev/berth/test/tier"
)

// A loopback port on the host reaches an echo server bound only inside a namespace, connection after connection,
// and stops when its context ends.
func TestForwardReachesAServerInsideTheNamespace(t *testing.T) {
	tier.Require(t, tier.Root, tier.NetNS)
	if _, err := exec.LookPath("socat"); err != nil {
		t.Fatalf("socat (apt package socat, `make deps`): %v", err)
	}
	ns, err := Create(fmt.Sprintf("berth-fwd-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Delete() })
	name, args := ns.Command("socat", "TCP-LISTEN:9000,bind=127.0.0.1,fork,reuseaddr", "EXEC:cat")
	srv := exec.Command(name, args...)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		c, err := ns.DialContext(ctx, "tcp", "127.0.0.1:9000")
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the echo server in the namespace never listened: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ns.Forward(fctx, ln, "127.0.0.1:9000", slog.New(slog.DiscardHandler)) }()
	for i := range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("hello %d", i)
		fmt.Fprintln(c, want)
		got, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || got != want+"\n" {
			t.Fatalf("connection %d: got %q, %v; want the echo %q", i, got, err, want)
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("Forward after its context ended: %v", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("the forward still accepts after its context ended")
	}
}
