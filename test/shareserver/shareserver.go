// Package shareserver starts, for tests, real file servers on this host's loopback: Debian's smbd (Samba) with
// one share and a user, and nfs-ganesha with one NFSv4 export (the host has no kernel nfsd). Each runs in the
// foreground from a directory of its own (config, state, logs, the shared files), on a free port, and is stopped
// at test cleanup. Guests reach them through qemu forwards (the host kernel has no CIFS or NFS client).
package shareserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/test/tier"
)

// Server is a running file server.
type Server struct {
	Port int
	// Dir is the shared directory on this host (SMB: the share; NFS: the export).
	Dir  string
	Log  string
	dir  string
	proc *proc.Process
	spec proc.Spec
	reg  proc.Registry
	t    testing.TB
}

// SMB starts smbd with the share "data" (read-write) for the user root with password.
func SMB(t testing.TB, password string) *Server {
	t.Helper()
	tier.Require(t, tier.Root, tier.Samba)
	dir := t.TempDir()
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Port: port, Dir: filepath.Join(dir, "data"), Log: filepath.Join(dir, "smbd.log"), dir: dir, t: t}
	for _, d := range []string{"data", "private", "lock", "state", "cache", "pid", "ncalrpc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "smb.conf")
	write(t, conf, fmt.Sprintf(`[global]
server role = standalone server
workgroup = WORKGROUP
interfaces = lo
bind interfaces only = yes
smb ports = %[1]d
disable netbios = yes
server min protocol = SMB2_10
private dir = %[2]s/private
lock directory = %[2]s/lock
state directory = %[2]s/state
cache directory = %[2]s/cache
pid directory = %[2]s/pid
ncalrpc dir = %[2]s/ncalrpc
passdb backend = tdbsam:%[2]s/private/passdb.tdb
log file = %[2]s/smbd.log
log level = 1
map to guest = never
load printers = no
disable spoolss = yes
unix extensions = no

[data]
path = %[2]s/data
read only = no
valid users = root
force user = root
`, port, dir))
	cmd := exec.Command("smbpasswd", "-c", conf, "-a", "-s", "root")
	cmd.Stdin = strings.NewReader(password + "\n" + password + "\n") // never on a command line
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("smbpasswd: %v\n%s", err, out)
	}
	s.spec = proc.Spec{Name: "smbd", Group: dir, Path: "smbd", Args: []string{"-F", "--no-process-group", "--debug-stdout", "-s", conf}, Log: s.Log}
	s.start()
	return s
}

// NFS starts nfs-ganesha with the NFSv4 export /export (read-write, no root squash).
func NFS(t testing.TB) *Server {
	t.Helper()
	tier.Require(t, tier.Root, tier.Ganesha)
	dir := t.TempDir()
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Port: port, Dir: filepath.Join(dir, "export"), Log: filepath.Join(dir, "ganesha.log"), dir: dir, t: t}
	for _, d := range []string{"export", "recovery"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o777); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "ganesha.conf")
	write(t, conf, fmt.Sprintf(`NFS_CORE_PARAM {
	Protocols = 4;
	NFS_Port = %[1]d;
	Bind_addr = 127.0.0.1;
	Enable_NLM = false;
	Enable_RQUOTA = false;
}
NFSV4 {
	RecoveryRoot = %[2]s/recovery;
	Graceless = true;
}
EXPORT {
	Export_Id = 1;
	Path = %[2]s/export;
	Pseudo = /export;
	Access_Type = RW;
	Squash = No_Root_Squash;
	SecType = sys;
	Protocols = 4;
	Transports = TCP;
	FSAL { Name = VFS; }
}
`, port, dir))
	s.spec = proc.Spec{Name: "ganesha", Group: dir, Path: "ganesha.nfsd",
		Args: []string{"-F", "-f", conf, "-L", s.Log, "-p", filepath.Join(dir, "ganesha.pid"), "-N", "NIV_EVENT"}, Log: filepath.Join(dir, "ganesha.out")}
	s.start()
	return s
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
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
