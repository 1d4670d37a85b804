// Package bootstrap discovers a control plane the kubeadm way: cluster-info fetched without trust, its JWS
// signature for the bootstrap token verified, its CA checked against the pins, then fetched again over the pinned CA.
package bootstrap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
)

// Error classes of discovery; the agent maps each to its own exit code.
var (
	// ErrUnreachable: DNS, TCP or HTTP failure talking to the endpoint.
	ErrUnreachable = errors.New("control plane unreachable")
	// ErrTokenInvalid: cluster-info carries no valid signature for this token (unknown, expired, wrong secret).
	ErrTokenInvalid = errors.New("bootstrap token is invalid or expired")
	// ErrPinMismatch: the control plane's CA does not match any configured pin.
	ErrPinMismatch = errors.New("control plane CA does not match the pinned public key")
	// ErrTLS: the endpoint's serving certificate does not verify against the trusted CA.
	ErrTLS = errors.New("control plane TLS certificate does not verify")
	// ErrNotSigned: cluster-info carries no signature for the token within SignatureWait. The bootstrap signer
	// may not have signed a new token yet, or the token is unknown or expired: waiting may fix it.
	ErrNotSigned = errors.New("cluster-info is not signed for the token")
	// ErrCertTime: the control plane's certificate is not valid at this node's time, whose clock is then off
	// (or the certificate expired): a clock problem, not a pin mismatch.
	ErrCertTime = errors.New("the control plane's certificate is not valid at this node's time")
	// ErrTampered: cluster-info changed between the unverified and the verified fetch.
	ErrTampered = errors.New("cluster-info differs between the unverified and the verified fetch")
)

// Discovery says how to learn the control plane's CA.
type Discovery struct {
	Endpoint string // https://host:port
	Token    bootstraptoken.Token
	// Pins (kubeadm's discovery-token-ca-cert-hash) or CABundle (PEM): exactly one.
	Pins     []capin.Pin
	CABundle []byte
	// SignatureWait bounds how long to wait for the bootstrap signer to sign cluster-info for the token (it signs
	// within seconds of the token's creation). Default 30 s.
	SignatureWait time.Duration
	// Dial, if set, opens connections (tests reach namespaces with it).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the node's clock for certificate validity (default time.Now; tests skew it).
	Now func() time.Time
}

// Result is the trusted outcome.
type Result struct {
	// CA is the cluster CA bundle, PEM, now trusted.
	CA []byte
	// Server is the apiserver URL cluster-info advertises.
	Server string
}

// Discover runs kubeadm's token discovery: fetch kube-public/cluster-info without trusting the server, verify
// the token's JWS signature over its kubeconfig, check the CA in it against the pins, then fetch it again over
// TLS verified with that CA and require the same content. With a CA bundle, the fetch is verified from the start
// and the signature is still required (it proves the token before the kubelet uses it).
func Discover(ctx context.Context, d Discovery) (Result, error) {
	if d.SignatureWait == 0 {
		d.SignatureWait = 30 * time.Second
	}
	if (len(d.Pins) == 0) == (len(d.CABundle) == 0) {
		return Result{}, errors.New("discovery: set exactly one of pins and CA bundle")
	}
	trusted := d.CABundle
	kubeconfig, err := d.signedClusterInfo(ctx, trusted)
	if err != nil {
		return Result{}, err
	}
	cfg, err := clientcmd.Load([]byte(kubeconfig))
	if err != nil || len(cfg.Clusters) != 1 {
		return Result{}, fmt.Errorf("%w: cluster-info holds no single-cluster kubeconfig", ErrTampered)
	}
	var cluster struct {
		server string
		ca     []byte
	}
	for _, c := range cfg.Clusters {
		cluster.server, cluster.ca = c.Server, c.CertificateAuthorityData
	}
	if len(d.Pins) > 0 {
		certs, err := capin.ParseCerts(cluster.ca)
		if err != nil {
			return Result{}, fmt.Errorf("%w: cluster-info CA: %v", ErrPinMismatch, err)
		}
		matched := pinned(d.Pins, certs)
		if len(matched) == 0 {
			return Result{}, fmt.Errorf("%w: cluster-info's CA has pin %s", ErrPinMismatch, capin.Of(certs[0]))
		}
		// Only the pinned certificates become trusted: another CA in the bundle (written by whoever can write
		// cluster-info) must not vouch for a server later. kubeadm trusts the whole bundle once one pin matches.
		trusted = nil
		for _, c := range matched {
			trusted = append(trusted, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
		again, err := d.fetch(ctx, trusted)
		if err != nil {
			return Result{}, err
		}
		if again.Data[bootstrapapi.KubeConfigKey] != kubeconfig {
			return Result{}, ErrTampered
		}
	}
	return Result{CA: trusted, Server: cluster.server}, nil
}

// signedClusterInfo fetches cluster-info (verified with ca, or not at all when ca is nil) until it carries a
// signature for the token, and checks that signature.
func (d Discovery) signedClusterInfo(ctx context.Context, ca []byte) (string, error) {
	deadline := time.Now().Add(d.SignatureWait)
	key := bootstrapapi.JWSSignatureKeyPrefix + d.Token.ID()
	for {
		cm, err := d.fetch(ctx, ca)
		if err != nil {
			return "", err
		}
		content := cm.Data[bootstrapapi.KubeConfigKey]
		if sig, ok := cm.Data[key]; ok {
			if !jws.DetachedTokenIsValid(sig, content, d.Token.ID(), d.Token.Secret()) {
				return "", fmt.Errorf("%w: the signature for token %s does not verify (wrong secret)", ErrTokenInvalid, d.Token.ID())
			}
			return content, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%w: no signature for token %s after %v (not signed yet, or an unknown or expired token)", ErrNotSigned, d.Token.ID(), d.SignatureWait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// fetch GETs cluster-info anonymously; ca nil means no verification (only signed content is used then).
func (d Discovery) fetch(ctx context.Context, ca []byte) (*corev1.ConfigMap, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, Time: d.Now}
	if ca == nil {
		tlsCfg.InsecureSkipVerify = true // nothing from this response is trusted before its signature and pin check
	} else {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("%w: no usable certificate in the CA bundle", ErrTLS)
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, Proxy: nil, ForceAttemptHTTP2: false}
	if d.Dial != nil {
		tr.DialContext = d.Dial
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := strings.TrimRight(d.Endpoint, "/") + "/api/v1/namespaces/" + "kube-public" + "/configmaps/" + bootstrapapi.ConfigMapClusterInfo
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		var uae x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		var verr *tls.CertificateVerificationError
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return nil, fmt.Errorf("%w: %v", ErrCertTime, err)
		}
		if errors.As(err, &uae) || errors.As(err, &hostErr) || errors.As(err, &verr) {
			return nil, fmt.Errorf("%w: %v", ErrTLS, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: GET cluster-info: %s", ErrUnreachable, resp.Status)
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(body, &cm); err != nil {
		return nil, fmt.Errorf("%w: cluster-info is not a ConfigMap: %v", ErrUnreachable, err)
	}
	return &cm, nil
}

// pinned returns the certificates that match a pin, in the bundle's order.
func pinned(pins []capin.Pin, certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		if slices.ContainsFunc(pins, func(p capin.Pin) bool { return p.Matches(c) }) {
			out = append(out, c)
		}
	}
	return out
}
