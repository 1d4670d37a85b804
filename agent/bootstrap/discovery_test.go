package bootstrap_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/agent/bootstrap"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"berth.dev/berth/test/controlplane"
)

// Discovery against the real control plane: every outcome a node can meet.
func TestDiscoverAgainstRealControlPlane(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t, controlplane.Config{})
	ji, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(cp.CACertPath())
	if err != nil {
		t.Fatal(err)
	}
	otherCA := selfSigned(t)
	otherPin := capin.Of(mustParse(t, otherCA))
	wrongSecret, _ := bootstraptoken.Generate()
	wrongSecret, _ = bootstraptoken.Parse(ji.Token.ID() + "." + wrongSecret.Secret())
	unknown, _ := bootstraptoken.Generate()

	for _, c := range []struct {
		name string
		d    bootstrap.Discovery
		want error
	}{
		{"pin", bootstrap.Discovery{Endpoint: ji.Endpoint, Token: ji.Token, Pins: []capin.Pin{otherPin, ji.CACertPin}}, nil},
		{"CA bundle", bootstrap.Discovery{Endpoint: ji.Endpoint, Token: ji.Token, CABundle: ca}, nil},
		{"wrong pin", bootstrap.Discovery{Endpoint: ji.Endpoint, Token: ji.Token, Pins: []capin.Pin{otherPin}}, bootstrap.ErrPinMismatch},
		{"wrong CA bundle", bootstrap.Discovery{Endpoint: ji.Endpoint, Token: ji.Token, CABundle: otherCA}, bootstrap.ErrTLS},
		{"wrong secret", bootstrap.Discovery{Endpoint: ji.Endpoint, Token: wrongSecret, Pins: []capin.Pin{ji.CACertPin}}, bootstrap.ErrTokenInvalid},
		{"unknown token", bootstrap.Discovery{Endpoint: ji.Endpoint, Token: unknown, Pins: []capin.Pin{ji.CACertPin}, SignatureWait: 2 * time.Second}, bootstrap.ErrNotSigned},
		{"nothing listens", bootstrap.Discovery{Endpoint: "https://127.0.0.1:1", Token: ji.Token, Pins: []capin.Pin{ji.CACertPin}}, bootstrap.ErrUnreachable},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := bootstrap.Discover(ctx, c.d)
			if c.want != nil {
				if !errors.Is(err, c.want) {
					t.Fatalf("err = %v, want %v", err, c.want)
				}
				if bytes.Contains([]byte(err.Error()), []byte(c.d.Token.Secret())) {
					t.Errorf("the error leaks the token secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.CA, ca) || res.Server != cp.Endpoint {
				t.Errorf("result server %s, CA equal: %v; want %s and the cluster CA", res.Server, bytes.Equal(res.CA, ca), cp.Endpoint)
			}
		})
	}
}

func selfSigned(t *testing.T) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "impostor"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func mustParse(t *testing.T, p []byte) *x509.Certificate {
	b, _ := pem.Decode(p)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// cluster-info that changes between the unverified fetch and the verified one is refused (ErrTampered), against
// the real apiserver: the verified fetch's dial first rewrites the ConfigMap's kubeconfig through the admin
// client, as someone replacing cluster-info mid-discovery would.
func TestDiscoverRefusesClusterInfoChangedBetweenFetches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t, controlplane.Config{})
	ji, err := cp.JoinInfo()
	if err != nil {
		t.Fatal(err)
	}
	cms := cp.Client.CoreV1().ConfigMaps("kube-public")
	var dials atomic.Int32
	var rewrite error
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) == 2 {
			cm, err := cms.Get(ctx, "cluster-info", metav1.GetOptions{})
			if err == nil {
				cm.Data["kubeconfig"] = strings.Replace(cm.Data["kubeconfig"], "127.0.0.1", "localhost", 1)
				_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
			}
			rewrite = err
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	_, err = bootstrap.Discover(ctx, bootstrap.Discovery{Endpoint: ji.Endpoint, Token: ji.Token, Pins: []capin.Pin{ji.CACertPin}, Dial: dial})
	if rewrite != nil || dials.Load() != 2 {
		t.Fatalf("the rewrite between the fetches did not happen: %v after %d dials", rewrite, dials.Load())
	}
	if !errors.Is(err, bootstrap.ErrTampered) {
		t.Errorf("err = %v, want ErrTampered", err)
	}
}
