package preflight

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"berth.dev/berth/test/controlplane"
)

// Every failure class against the real control plane (DNS failures through a resolver that asks a closed
// loopback port, so no query leaves the machine).
func TestPreflightClasses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t, controlplane.Config{})
	ji, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(ji.Endpoint, "https://"))
	closed, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadDNS := closed.LocalAddr().String()
	closed.Close()
	noDNS := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", deadDNS)
	}}
	unknown, _ := bootstraptoken.Generate()
	wrongSecret, err := bootstraptoken.Parse(ji.Token.ID() + ".0000000000000000")
	if err != nil {
		t.Fatal(err)
	}
	spec := func(endpoint string, pin string) nodeconfig.ControlPlane {
		p, err := capin.Parse(pin)
		if err != nil {
			t.Fatal(err)
		}
		return nodeconfig.ControlPlane{Endpoint: endpoint, Discovery: nodeconfig.Discovery{Pins: []capin.Pin{p}}}
	}
	for _, c := range []struct {
		name  string
		spec  nodeconfig.ControlPlane
		tok   bootstraptoken.Token
		o     Options
		class Class // 0: passes
	}{
		{"ok by name", spec("https://localhost:"+port, string(ji.CACertPin)), ji.Token, Options{}, 0},
		{"dns", spec("https://berth-nonexistent.invalid:"+port, string(ji.CACertPin)), ji.Token, Options{Resolver: noDNS}, ClassDNS},
		{"tcp", spec("https://127.0.0.1:1", string(ji.CACertPin)), ji.Token, Options{}, ClassTCP},
		{"pin", spec(ji.Endpoint, "sha256:"+strings.Repeat("ab", 32)), ji.Token, Options{}, ClassTLS},
		{"unsigned token", spec(ji.Endpoint, string(ji.CACertPin)), unknown, Options{SignatureWait: time.Second}, ClassPending},
		{"wrong secret", spec(ji.Endpoint, string(ji.CACertPin)), wrongSecret, Options{}, ClassToken},
		{"clock", spec(ji.Endpoint, string(ji.CACertPin)), ji.Token, Options{Now: func() time.Time { return time.Now().Add(10 * time.Minute) }}, ClassClock},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Run(ctx, c.spec, c.tok, c.o)
			var pe *Error
			switch {
			case c.class == 0 && err != nil:
				t.Fatalf("failed: %v", err)
			case c.class == 0:
				if strings.Join(res.Passed, ",") != "dns,tcp,tls,token,clock" || len(res.CA) == 0 {
					t.Errorf("passed %v, CA %d bytes", res.Passed, len(res.CA))
				}
			case !errors.As(err, &pe):
				t.Fatalf("err = %v, want a preflight error of class %d", err, c.class)
			case pe.Class != c.class:
				t.Errorf("class = %d (%v), want %d", pe.Class, err, c.class)
			case pe.Hint == "" || strings.Contains(err.Error(), c.tok.Secret()):
				t.Errorf("error without a hint, or leaking the token: %v", err)
			}
		})
	}
}

func TestTokenFromFile(t *testing.T) {
	path := t.TempDir() + "/token"
	os.WriteFile(path, []byte("abcdef.0123456789abcdef\n"), 0o600)
	tok, err := Token(nodeconfig.Discovery{TokenFile: path})
	if err != nil || tok.ID() != "abcdef" {
		t.Errorf("token from file: %v %v", tok, err)
	}
	if _, err := Token(nodeconfig.Discovery{TokenFile: path + ".missing"}); err == nil {
		t.Error("a missing token file was accepted")
	}
	inline, _ := bootstraptoken.Parse("ghijkl.0123456789abcdef")
	if tok, err := Token(nodeconfig.Discovery{Token: inline}); err != nil || tok.ID() != "ghijkl" {
		t.Errorf("inline token: %v %v", tok, err)
	}
	if _, err := Token(nodeconfig.Discovery{}); err == nil || !strings.Contains(err.Error(), "neither token nor tokenFile") {
		t.Errorf("no token: %v", err)
	}
}

// A joined node's recheck, against a TLS server on loopback whose certificate is its own CA (httptest's): the CA
// it trusts must be pinned, and the endpoint must serve a certificate that CA signed, at a time the node agrees on.
func TestRecheckClasses(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	other := httptest.NewUnstartedServer(nil)
	other.TLS = &tls.Config{Certificates: []tls.Certificate{otherCert(t)}}
	other.StartTLS()
	defer other.Close()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	pin := capin.Of(srv.Certificate())
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedURL := "https://" + closed.Addr().String()
	closed.Close()
	for _, c := range []struct {
		name     string
		endpoint string
		pins     []capin.Pin
		bundle   []byte
		o        Options
		class    Class // 0: passes
		check    string
	}{
		{"ok", srv.URL, []capin.Pin{pin}, nil, Options{}, 0, ""},
		{"ok by bundle", srv.URL, nil, ca, Options{}, 0, ""},
		{"not pinned", srv.URL, []capin.Pin{"sha256:" + capin.Pin(strings.Repeat("ab", 32))}, nil, Options{}, ClassTLS, "pin"},
		{"another CA's server", other.URL, []capin.Pin{pin}, nil, Options{}, ClassTLS, "tls"},
		{"closed port", closedURL, []capin.Pin{pin}, nil, Options{}, ClassTCP, "tcp"},
		{"clock", srv.URL, []capin.Pin{pin}, nil, Options{Now: func() time.Time { return time.Now().Add(10 * time.Minute) }}, ClassClock, "clock"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cp := nodeconfig.ControlPlane{Endpoint: c.endpoint, Discovery: nodeconfig.Discovery{Pins: c.pins, CABundle: c.bundle}}
			err := Recheck(context.Background(), cp, ca, c.o)
			var pe *Error
			switch {
			case c.class == 0 && err != nil:
				t.Fatalf("failed: %v", err)
			case c.class == 0:
			case !errors.As(err, &pe):
				t.Fatalf("err = %v, want a preflight error of class %d", err, c.class)
			case pe.Class != c.class || pe.Check != c.check || pe.Hint == "":
				t.Errorf("class %d, check %q (%v), want %d, %q, with a hint", pe.Class, pe.Check, err, c.class, c.check)
			}
		})
	}
}

// otherCert is a self-signed certificate for 127.0.0.1 of a CA the node does not trust.
func otherCert(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "impostor"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
