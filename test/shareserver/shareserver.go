// Package shareserver starts, for tests, real file servers on this host's loopback (internal/dev/shareserver's:
// Debian's smbd with one share and a user, nfs-ganesha with one NFSv4 export), each from a test directory of its
// own, on a free port, stopped at test cleanup. Guests reach them through qemu forwards (the host kernel has no
// CIFS or NFS client).
package shareserver

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/internal/dev/proc"
	devshares "berth.dev/berth/internal/dev/shareserver"
	"berth.dev/berth/test/tier"
)

// Server is a running file server.
type Server struct {
	Port int
	// Dir is the shared directory on this host (SMB: the share; NFS: the export).
	Dir  string
	Log  string
	conf *devshares.Server
	proc *proc.Process
	spec proc.Spec
	reg  proc.Registry
	t    testing.TB
}

// SMB starts smbd with the share "data" (read-write) for the user root with password.
func SMB(t testing.TB, password string) *Server {
	t.Helper()
	tier.Require(t, tier.Root, tier.Samba)
	return run(t, func(dir string, addr netip.AddrPort) (*devshares.Server, error) {
		return devshares.SMB(dir, addr, password)
	})
}

// NFS starts nfs-ganesha with the NFSv4 export /export (read-write, no root squash).
func NFS(t testing.TB) *Server {
	t.Helper()
	tier.Require(t, tier.Root, tier.Ganesha)
	return run(t, devshares.NFS)
}

// run configures a server in a directory of the test's on a free loopback port and starts it.
func run(t testing.TB, configure func(dir string, addr netip.AddrPort) (*devshares.Server, error)) *Server {
	t.Helper()
	dir := t.TempDir()
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := configure(dir, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port)))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Port: port, Dir: conf.Dir, Log: conf.Log, conf: conf, t: t,
		spec: proc.Spec{Name: filepath.Base(conf.Path), Group: dir, Path: conf.Path, Args: conf.Args, Log: filepath.Join(dir, "server.out")}}
	s.start()
	return s
}

// SetSMBPassword changes the SMB user's password (the sessions that start after use it).
func (s *Server) SetSMBPassword(password string) {
	s.t.Helper()
	if err := s.conf.SetSMBPassword(password); err != nil {
		s.t.Fatal(err)
	}
}

// start runs the server and waits until its port accepts connections.
func (s *Server) start() {
	s.t.Helper()
	s.reg = proc.DefaultRegistry(nil)
	p, err := s.reg.Start(s.spec)
	if err != nil {
		s.t.Fatal(err)
	}
	s.proc = p
	s.t.Cleanup(func() { s.Stop() })
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s does not listen on %d: %v\n%s\n%s", s.spec.Name, s.Port, err, proc.Tail(s.spec.Log, 20), proc.Tail(s.Log, 20))
		}
	}
}

// Stop stops the server; safe to call twice.
func (s *Server) Stop() {
	if s.proc != nil {
		s.proc.Stop(5 * time.Second)
		s.proc = nil
	}
}

// Restart stops the server and starts it again on the same port, as a server's restart does to clients.
func (s *Server) Restart() { s.t.Helper(); s.RestartWith(func() {}) }

// RestartWith stops the server, runs between (to change what it serves), and starts it again on the same port.
func (s *Server) RestartWith(between func()) {
	s.t.Helper()
	s.Stop()
	between()
	s.start()
}
