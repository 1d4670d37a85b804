package bootstrap_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"

	"berth.dev/berth/agent/bootstrap"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
)

// fakeClusterInfo serves kube-public/cluster-info over TLS with httptest's certificate (a self-signed CA), the way
// the apiserver does: a kubeconfig whose CA data is caPEM, signed for tok. Each request may get other content
// (tamper); the handler counts requests. Unit tests of discovery's logic only; the control-plane tier covers the
// real apiserver.
type fakeClusterInfo struct {
	srv      *httptest.Server
	requests atomic.Int32
	content  func(n int32) string
}

func newFakeClusterInfo(t *testing.T, tok bootstraptoken.Token, extraCAs ...[]byte) *fakeClusterInfo {
	t.Helper()
	f := &fakeClusterInfo{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := f.requests.Add(1)
		content := f.content(n)
		sig, err := jws.ComputeDetachedSignature(content, tok.ID(), tok.Secret())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		json.NewEncoder(w).Encode(corev1.ConfigMap{Data: map[string]string{
			bootstrapapi.KubeConfigKey: content, bootstrapapi.JWSSignatureKeyPrefix + tok.ID(): sig}})
	}))
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	bundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	for _, ca := range extraCAs {
		bundle = append(bundle, ca...)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{Server: f.srv.URL, CertificateAuthorityData: bundle}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.content = func(int32) string { return string(data) }
	return f
}

func (f *fakeClusterInfo) pin() capin.Pin { return capin.Of(f.srv.Certificate()) }

func testToken(t *testing.T) bootstraptoken.Token {
	tok, err := bootstraptoken.Parse("abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// cluster-info's CA data may hold more certificates than the pinned one; only the pinned one becomes trusted, so
// an extra CA smuggled into the bundle (by whoever can write cluster-info) cannot later vouch for a server.
func TestDiscoverTrustsOnlyThePinnedCertificates(t *testing.T) {
	tok := testToken(t)
	extra := selfSigned(t)
	f := newFakeClusterInfo(t, tok, extra)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := bootstrap.Discover(ctx, bootstrap.Discovery{Endpoint: f.srv.URL, Token: tok, Pins: []capin.Pin{f.pin()}})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := capin.ParseCerts(res.CA)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 || !f.pin().Matches(certs[0]) {
		t.Errorf("trusted %d certificates, want only the pinned one", len(certs))
	}
	if res.Server != f.srv.URL {
		t.Errorf("server %q, want %q", res.Server, f.srv.URL)
	}
}

// Content that differs between the unverified and the verified fetch is refused, even when both are signed.
func TestDiscoverRefusesContentThatChangesUnderIt(t *testing.T) {
	tok := testToken(t)
	f := newFakeClusterInfo(t, tok)
	first := f.content
	f.content = func(n int32) string {
		if n == 1 {
			return first(n)
		}
		return first(n) + "\n# changed\n"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := bootstrap.Discover(ctx, bootstrap.Discovery{Endpoint: f.srv.URL, Token: tok, Pins: []capin.Pin{f.pin()}})
	if !errors.Is(err, bootstrap.ErrTampered) {
		t.Errorf("err = %v, want ErrTampered", err)
	}
}

// A pin that matches no certificate of cluster-info's CA fails as a pin mismatch, before any verified fetch.
func TestDiscoverRefusesAnUnpinnedCA(t *testing.T) {
	tok := testToken(t)
	f := newFakeClusterInfo(t, tok)
	other := capin.Of(mustParse(t, selfSigned(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := bootstrap.Discover(ctx, bootstrap.Discovery{Endpoint: f.srv.URL, Token: tok, Pins: []capin.Pin{other}})
	if !errors.Is(err, bootstrap.ErrPinMismatch) || f.requests.Load() != 1 {
		t.Errorf("err = %v after %d requests, want ErrPinMismatch after 1", err, f.requests.Load())
	}
}

// cluster-info without a signature for the token, after SignatureWait, is ErrNotSigned (retried: the signer may
// be slow), not ErrTokenInvalid (a wrong secret, which waiting cannot fix).
func TestDiscoverUnsignedIsNotAnInvalidToken(t *testing.T) {
	tok := testToken(t)
	other, err := bootstraptoken.Parse("zzzzzz.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeClusterInfo(t, other) // signed for another token only
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = bootstrap.Discover(ctx, bootstrap.Discovery{Endpoint: f.srv.URL, Token: tok, Pins: []capin.Pin{f.pin()}, SignatureWait: time.Millisecond})
	if !errors.Is(err, bootstrap.ErrNotSigned) || errors.Is(err, bootstrap.ErrTokenInvalid) {
		t.Errorf("err = %v, want ErrNotSigned only", err)
	}
}

// A node clock far off the certificate's validity (httptest's certificate is valid until 2084) fails as a
// certificate-time problem, not as a pin or TLS mismatch, on the verified fetch and with a CA bundle alike.
func TestDiscoverWithASkewedClockIsACertificateTimeError(t *testing.T) {
	tok := testToken(t)
	f := newFakeClusterInfo(t, tok)
	future := func() time.Time { return time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	for name, d := range map[string]bootstrap.Discovery{
		"pins":      {Endpoint: f.srv.URL, Token: tok, Pins: []capin.Pin{f.pin()}, Now: future},
		"CA bundle": {Endpoint: f.srv.URL, Token: tok, CABundle: bundle, Now: future},
	} {
		_, err := bootstrap.Discover(ctx, d)
		if !errors.Is(err, bootstrap.ErrCertTime) || errors.Is(err, bootstrap.ErrTLS) || errors.Is(err, bootstrap.ErrPinMismatch) {
			t.Errorf("%s: err = %v, want ErrCertTime", name, err)
		}
	}
}
