// Package ports picks free loopback ports for test daemons and guest forwards.
package ports

import (
	"fmt"
	"net"
)

// Free asks the kernel for a free port on 127.0.0.1. Another process could take it before the caller binds it;
// the daemon then fails with "address in use" in its log, which its starter reports.
func Free() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
