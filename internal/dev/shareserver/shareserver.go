// Package shareserver configures real file servers for the local cloud and the tests: Debian's smbd (Samba) with
// one share, "data", and one user, and nfs-ganesha with one NFSv4 export, "/export" (the host has no kernel nfsd).
// Each runs in the foreground from a directory of its own (config, state, logs and the shared files), bound to one
// address and port; the caller starts the returned command line (in a network namespace, if it likes).
package shareserver

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"berth.dev/berth/internal/node/atomicfile"
)

// SMBUser is the one user of an SMB server, who owns what it writes.
const SMBUser = "root"

// Server is a configured file server.
type Server struct {
	// Dir is the shared directory (SMB: the share "data"; NFS: the export "/export").
	Dir string
	// Log is the server's own log file.
	Log string
	// Path and Args are its command line (no secret on it), to run in the foreground.
	Path string
	Args []string
	conf string
}

// SMB configures smbd in dir to serve the share "data" on addr (on its own: `bind interfaces only`), for SMBUser
// with password (given to smbpasswd on stdin, never on a command line). SMB 2.1 and later only, no NetBIOS.
func SMB(dir string, addr netip.AddrPort, password string) (*Server, error) {
	s := &Server{Dir: filepath.Join(dir, "data"), Log: filepath.Join(dir, "smbd.log"), conf: filepath.Join(dir, "smb.conf")}
	for _, d := range []string{"data", "private", "lock", "state", "cache", "pid", "ncalrpc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("smbd: %w", err)
		}
	}
	// The share's files are the server's: pods write as whoever the share maps them to.
	if err := os.Chmod(s.Dir, 0o777); err != nil {
		return nil, fmt.Errorf("smbd: %w", err)
	}
	iface := addr.Addr().String()
	if addr.Addr().IsLoopback() {
		iface = "lo"
	}
	conf := fmt.Sprintf(`[global]
server role = standalone server
workgroup = WORKGROUP
interfaces = %[3]s
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
valid users = %[4]s
force user = %[4]s
`, addr.Port(), dir, iface, SMBUser)
	if err := atomicfile.Write(s.conf, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("smbd: %w", err)
	}
	if err := s.SetSMBPassword(password); err != nil {
		return nil, err
	}
	s.Path, s.Args = SMBCommand(dir)
	return s, nil
}

// SMBCommand is the command line of the SMB server configured in dir (by SMB, perhaps in another process).
func SMBCommand(dir string) (path string, args []string) {
	return "smbd", []string{"-F", "--no-process-group", "--debug-stdout", "-s", filepath.Join(dir, "smb.conf")}
}

// SetSMBPassword sets SMBUser's password on the SMB server configured by SMB; a running smbd takes it for the
// sessions that start after.
func (s *Server) SetSMBPassword(password string) error {
	return SetSMBPassword(filepath.Dir(s.conf), password)
}

// SetSMBPassword sets SMBUser's password on the SMB server configured in dir (by SMB, perhaps in another process).
func SetSMBPassword(dir, password string) error {
	cmd := exec.Command("smbpasswd", "-c", filepath.Join(dir, "smb.conf"), "-a", "-s", SMBUser)
	cmd.Stdin = bytes.NewBufferString(password + "\n" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("smbpasswd: %w: %s", err, out)
	}
	return nil
}

// NFS configures nfs-ganesha in dir to serve the NFSv4 export /export (read-write, no root squash) on addr.
func NFS(dir string, addr netip.AddrPort) (*Server, error) {
	s := &Server{Dir: filepath.Join(dir, "export"), Log: filepath.Join(dir, "ganesha.log"), Path: "ganesha.nfsd", conf: filepath.Join(dir, "ganesha.conf")}
	for _, d := range []string{"export", "recovery"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o777); err != nil {
			return nil, fmt.Errorf("ganesha: %w", err)
		}
	}
	if err := os.Chmod(s.Dir, 0o777); err != nil {
		return nil, fmt.Errorf("ganesha: %w", err)
	}
	conf := fmt.Sprintf(`NFS_CORE_PARAM {
	Protocols = 4;
	NFS_Port = %[1]d;
	Bind_addr = %[3]s;
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
`, addr.Port(), dir, addr.Addr())
	if err := atomicfile.Write(s.conf, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("ganesha: %w", err)
	}
	s.Args = []string{"-F", "-f", s.conf, "-L", s.Log, "-p", filepath.Join(dir, "ganesha.pid"), "-N", "NIV_EVENT"}
	return s, nil
}
