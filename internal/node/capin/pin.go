// Package capin is a CA public-key pin in kubeadm's --discovery-token-ca-cert-hash format, and the parsing of
// the PEM bundles pins are checked against.
package capin

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Pin is a CA public-key pin in kubeadm's --discovery-token-ca-cert-hash format: "sha256:" followed by the hex
// SHA-256 of the CA certificate's DER-encoded SubjectPublicKeyInfo.
type Pin string

// PinOf returns the pin of cert.
func Of(cert *x509.Certificate) Pin {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return Pin("sha256:" + hex.EncodeToString(sum[:]))
}

// ParsePin checks s is a well-formed pin and returns it normalised to lower case.
func Parse(s string) (Pin, error) {
	alg, hexsum, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("CA pin %q: want sha256:<64 hex digits>", s)
	}
	if !strings.EqualFold(alg, "sha256") {
		return "", fmt.Errorf("CA pin %q: unsupported hash %q, want sha256", s, alg)
	}
	b, err := hex.DecodeString(hexsum)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA pin %q: want sha256:<64 hex digits>", s)
	}
	return Pin("sha256:" + hex.EncodeToString(b)), nil
}

// Matches reports whether cert's public key has this pin.
func (p Pin) Matches(cert *x509.Certificate) bool { return Of(cert) == p }

// ParseCerts parses a PEM bundle of certificates; anything else in it (another block type, stray data) is an
// error naming the position.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, fmt.Errorf("data after certificate %d is not PEM", len(certs))
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}
