// Package bootstrap holds what a node needs to join a control plane the kubeadm way: bootstrap tokens and CA
// public-key pins.
package bootstrap

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// Pin is a CA public-key pin in kubeadm's --discovery-token-ca-cert-hash format: "sha256:" followed by the hex
// SHA-256 of the CA certificate's DER-encoded SubjectPublicKeyInfo.
type Pin string

// PinOf returns the pin of cert.
func PinOf(cert *x509.Certificate) Pin {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return Pin("sha256:" + hex.EncodeToString(sum[:]))
}

// ParsePin checks s is a well-formed pin and returns it normalised to lower case.
func ParsePin(s string) (Pin, error) {
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
func (p Pin) Matches(cert *x509.Certificate) bool { return PinOf(cert) == p }
