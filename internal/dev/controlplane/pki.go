package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"berth.dev/berth/internal/node/atomicfile"
)

// certSpec is one certificate of the control plane's PKI, kubeadm style.
type certSpec struct {
	name   string // file base name under pki/
	cn     string
	orgs   []string
	server bool
	client bool
	ips    []net.IP
	dns    []string
}

// keyPair is a certificate with its key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// PKI paths under the control plane's directory.
func (c *ControlPlane) pki(name string) string { return filepath.Join(c.cfg.Dir, "pki", name) }

// ensurePKI creates the CA, the front-proxy CA, the service-account key and the leaf certificates, or keeps the
// ones already on disk (a re-run keeps the same CA, so join material handed out earlier stays valid). Leaf
// certificates are always re-issued, since the addresses they name may have changed.
func (c *ControlPlane) ensurePKI() error {
	ca, err := c.ensureCA("ca", "kubernetes")
	if err != nil {
		return err
	}
	fpCA, err := c.ensureCA("front-proxy-ca", "front-proxy-ca")
	if err != nil {
		return err
	}
	if _, err := c.ensureKey("sa"); err != nil {
		return err
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), c.serviceIP.AsSlice(), c.cfg.BindAddress.AsSlice()}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + c.cfg.ClusterDomain}
	for _, san := range c.cfg.ExtraSANs {
		if ip := net.ParseIP(san); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, san)
		}
	}
	leaves := []struct {
		spec certSpec
		ca   keyPair
	}{
		{certSpec{name: "apiserver", cn: "kube-apiserver", server: true, ips: ips, dns: dns}, ca},
		{certSpec{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{clusterAdminsGroup}, client: true}, ca},
		{certSpec{name: "admin", cn: "berth-admin", orgs: []string{"system:masters"}, client: true}, ca},
		{certSpec{name: "controller-manager", cn: "system:kube-controller-manager", client: true}, ca},
		{certSpec{name: "scheduler", cn: "system:kube-scheduler", client: true}, ca},
		{certSpec{name: "front-proxy-client", cn: "front-proxy-client", client: true}, fpCA},
	}
	for _, l := range leaves {
		if err := c.issue(l.spec, l.ca); err != nil {
			return err
		}
	}
	return nil
}

func (c *ControlPlane) ensureKey(name string) (crypto.Signer, error) {
	path := c.pki(name + ".key")
	if data, err := os.ReadFile(path); err == nil {
		return parseKey(data, path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key %s: %w", name, err)
	}
	if err := writeKey(path, key); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal public key %s: %w", name, err)
	}
	if err := atomicfile.Write(c.pki(name+".pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return nil, err
	}
	return key, nil
}

func (c *ControlPlane) ensureCA(name, cn string) (keyPair, error) {
	certPath := c.pki(name + ".crt")
	if data, err := os.ReadFile(certPath); err == nil {
		block, _ := pem.Decode(data)
		if block == nil {
			return keyPair{}, fmt.Errorf("%s: no PEM certificate", certPath)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return keyPair{}, fmt.Errorf("%s: %w", certPath, err)
		}
		keyPath := c.pki(name + ".key")
		keyData, err := os.ReadFile(keyPath)
		if err != nil {
			return keyPair{}, fmt.Errorf("read %s: %w", keyPath, err)
		}
		key, err := parseKey(keyData, keyPath)
		if err != nil {
			return keyPair{}, err
		}
		return keyPair{cert, key}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, fmt.Errorf("generate %s key: %w", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return keyPair{}, fmt.Errorf("self-sign %s: %w", name, err)
	}
	cert, _ := x509.ParseCertificate(der)
	// Key first: a cert on disk without its key would be taken for a complete CA on the next run.
	if err := writeKey(c.pki(name+".key"), key); err != nil {
		return keyPair{}, err
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return keyPair{}, err
	}
	return keyPair{cert, key}, nil
}

func (c *ControlPlane) issue(s certSpec, ca keyPair) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate %s key: %w", s.name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: s.cn, Organization: s.orgs},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		IPAddresses:  s.ips,
		DNSNames:     s.dns,
	}
	if s.server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return fmt.Errorf("issue %s: %w", s.name, err)
	}
	if err := writeKey(c.pki(s.name+".key"), key); err != nil {
		return err
	}
	return atomicfile.Write(c.pki(s.name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal %s: %w", path, err)
	}
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func parseKey(data []byte, path string) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key of type %T cannot sign", path, k)
	}
	return s, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
