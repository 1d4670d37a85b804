// Package logbackend runs real log backends for the log shipper's tests: VictoriaLogs (the pinned build) on a free
// loopback port, with its data in the test's temporary directory.
package logbackend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/internal/dev/logsql"
	"berth.dev/berth/internal/dev/ports"
	"berth.dev/berth/test/toolbin"
	"berth.dev/berth/test/wait"
)

// VictoriaLogs is a running victoria-logs.
type VictoriaLogs struct {
	// URL is its base, http://127.0.0.1:<port>.
	URL string

	t      testing.TB
	bin    string
	args   []string
	log    string
	cmd    *exec.Cmd
	exited chan error
	client *http.Client // the test's own, for /health and queries
	opts   Options
}

// Options are how a VictoriaLogs is reached: over https with the certificate and key given (CA is what signed
// them, for the test's own requests), and with basic authentication if User is set (a password change takes
// SetPassword and a restart).
type Options struct {
	CertFile, KeyFile, CA string
	User, Password        string
}

// basicAuth adds the current credentials to the test's requests.
type basicAuth struct {
	v    *VictoriaLogs
	next http.RoundTripper
}

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.v.opts.User != "" {
		r.SetBasicAuth(b.v.opts.User, b.v.opts.Password)
	}
	return b.next.RoundTrip(r)
}

// StartVictoriaLogs runs victoria-logs until the test ends and waits until it answers on /health.
func StartVictoriaLogs(t testing.TB) *VictoriaLogs {
	t.Helper()
	return StartVictoriaLogsWith(t, Options{})
}

// StartVictoriaLogsWith is StartVictoriaLogs reached as opts say.
func StartVictoriaLogsWith(t testing.TB, opts Options) *VictoriaLogs {
	t.Helper()
	bin := filepath.Join(toolbin.VictoriaLogs.ForTest(t), "victoria-logs")
	port, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	scheme, tr := "http", http.DefaultTransport.(*http.Transport).Clone()
	if opts.CertFile != "" {
		scheme = "https"
		pem, err := os.ReadFile(opts.CA)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	v := &VictoriaLogs{URL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), t: t, bin: bin, log: filepath.Join(dir, "victoria-logs.log"),
		opts: opts, args: []string{fmt.Sprintf("-httpListenAddr=127.0.0.1:%d", port), "-storageDataPath=" + filepath.Join(dir, "data"),
			"-loggerLevel=WARN", "-retentionPeriod=100y"}}
	v.client = &http.Client{Transport: basicAuth{v: v, next: tr}}
	if opts.CertFile != "" {
		v.args = append(v.args, "-tls", "-tlsCertFile="+opts.CertFile, "-tlsKeyFile="+opts.KeyFile)
	}
	t.Cleanup(func() {
		v.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(v.log); err == nil {
				t.Logf("victoria-logs' log:\n%s", b)
			}
		}
	})
	v.Start()
	return v
}

// Start starts it (again: the same port and data) and waits until it answers on /health.
func (v *VictoriaLogs) Start() {
	t := v.t
	t.Helper()
	logf, err := os.OpenFile(v.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := v.args
	if v.opts.User != "" {
		args = append(args[:len(args):len(args)], "-httpAuth.username="+v.opts.User, "-httpAuth.password="+v.opts.Password)
	}
	cmd := exec.Command(v.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	v.cmd, v.exited = cmd, exited
	wait.For(t, 30*time.Second, "victoria-logs answering /health", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("victoria-logs exited: %v", err)
		default:
		}
		resp, err := v.client.Get(v.URL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// SetPassword changes the basic-authentication password, in effect at the next Start.
func (v *VictoriaLogs) SetPassword(p string) { v.opts.Password = p }

// Stop stops it (an outage of the backend) with SIGTERM, so that it flushes what it acknowledged, and waits until
// it is gone (SIGKILL after 30 s).
func (v *VictoriaLogs) Stop() {
	if v.cmd == nil {
		return
	}
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.exited:
	case <-time.After(30 * time.Second):
		v.cmd.Process.Kill()
		<-v.exited
	}
	v.cmd = nil
}

// Query runs a LogsQL query and returns the matching entries (each a field → value map).
func (v *VictoriaLogs) Query(t testing.TB, query string) []map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := logsql.Query(ctx, v.client, v.URL, query, 0)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Count waits until query matches want entries (VictoriaLogs makes new data searchable within about a second)
// and returns them; it fails the test if it never does within 30 s.
func (v *VictoriaLogs) Count(t testing.TB, query string, want int) []map[string]string {
	t.Helper()
	var got []map[string]string
	wait.For(t, 30*time.Second, fmt.Sprintf("%d entries for %q", want, query), func() bool {
		got = v.Query(t, query)
		return len(got) >= want
	})
	if len(got) != want {
		t.Fatalf("%q: %d entries, want %d", query, len(got), want)
	}
	return got
}
