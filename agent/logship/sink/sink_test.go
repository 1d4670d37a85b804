package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/test/certs"
)

// Over TLS with a server that trusts only the test CA's client certificates: the client trusts the CA file and
// shows its certificate; a header comes from a file read for every request (a rotated value is sent at once); a
// missing file or a value with a line break is a transient error that names the file, not the value.
func TestTLSAndHeaderFiles(t *testing.T) {
	dir := t.TempDir()
	c := certs.Write(t, dir)
	caPEM, err := os.ReadFile(c.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	serverCert, err := tls.LoadX509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.TLS.PeerCertificates[0].Subject.CommonName+" "+r.Header.Get("Authorization"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	srv.StartTLS()
	defer srv.Close()

	auth := filepath.Join(dir, "authorization")
	os.WriteFile(auth, []byte("Bearer first\n"), 0o600)
	client, err := TLSClient(c.CA, c.ClientCert, c.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	h := HTTP{URL: srv.URL, HeaderFiles: map[string]string{"Authorization": auth}, Client: client}
	post := func() error {
		_, _, err := h.Post(context.Background(), "test", "/", "text/plain", []byte("x"), 1<<10)
		return err
	}
	if err := post(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(auth, []byte("Bearer second"), 0o600)
	if err := post(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "berth-logs Bearer first|berth-logs Bearer second" {
		t.Errorf("the server saw %q", got)
	}
	os.WriteFile(auth, []byte("Bearer x\nInjected: y"), 0o600)
	if err := post(); !IsRetry(err) || !strings.Contains(err.Error(), auth) || strings.Contains(err.Error(), "Injected") {
		t.Errorf("a value with a line break: %v", err)
	}
	os.Remove(auth)
	if err := post(); !IsRetry(err) || !strings.Contains(err.Error(), auth) {
		t.Errorf("a missing file: %v", err)
	}
	// Without the CA the server is not trusted; a missing or bad file is an error at once.
	plain, err := TLSClient("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(auth, []byte("Bearer third"), 0o600)
	h.Client = plain
	if err := post(); !IsRetry(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("an untrusted server: %v", err)
	}
	if _, err := TLSClient(filepath.Join(dir, "none.pem"), "", ""); err == nil || !strings.Contains(err.Error(), "caFile") {
		t.Errorf("a missing CA file: %v", err)
	}
	if _, err := TLSClient(c.ServerKey, "", ""); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without a certificate: %v", err)
	}
	if _, err := TLSClient("", c.ClientCert, c.ServerKey); err == nil || !strings.Contains(err.Error(), "certFile, keyFile") {
		t.Errorf("a key that is not the certificate's: %v", err)
	}
}
