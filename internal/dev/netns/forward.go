package netns

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
)

// Forward accepts connections on ln (on this side, e.g. loopback) and splices each to target, dialed inside the
// namespace, until ctx ends. It is how a host tool reaches a server bound only inside the namespace, as kind and
// k3d publish their apiserver on a loopback port. A failed dial closes that one connection and is logged.
func (n NS) Forward(ctx context.Context, ln net.Listener, target string, log *slog.Logger) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			t, err := n.DialContext(ctx, "tcp", target)
			if err != nil {
				log.Warn("forward: dial", "target", target, "err", err)
				return
			}
			defer t.Close()
			splice(c, t)
		}()
	}
}

// splice copies both ways until both directions are done, half-closing each side as its source ends.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		if _, err := io.Copy(dst, src); err != nil {
			dst.Close()
			src.Close()
			return
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}
