// Package ports picks free loopback ports for test daemons and guest forwards.
package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// floor is the lowest port Free picks: above the ports services are configured on.
const floor = 10000

// Free picks a free port on 127.0.0.1 below the kernel's ephemeral range (net.ipv4.ip_local_port_range), so that
// no connect() and no listen on port 0 on this machine is ever handed it: a daemon stopped and started again on
// the port it was given (a control plane restarted under a running guest, whose forward names the port) finds it
// still free, however many connections the tests beside it make meanwhile. Another Free could still pick the same
// port between the pick and the bind (one chance in some twenty thousand); the daemon then fails with "address in
// use" in its log, which its starter reports.
func Free() (int, error) {
	low := ephemeralLow("/proc/sys/net/ipv4/ip_local_port_range")
	if low-floor < 1000 {
		return anyFree()
	}
	for range 100 {
		p := floor + rand.IntN(low-floor)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, errors.New("pick a free port: 100 ports below the ephemeral range were all taken")
}

// anyFree asks the kernel for a free port, where the ephemeral range leaves no room below it.
func anyFree() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's default, 32768, when it cannot be read).
func ephemeralLow(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 1 || n > 65535 {
		return 32768
	}
	return n
}
