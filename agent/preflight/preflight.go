// Package preflight checks, before a node joins, everything that would make the join fail or hang: the endpoint's
// DNS name resolves, its port accepts TCP, its TLS certificate and CA match the pins, the bootstrap token is valid
// (cluster-info carries its signature), and the node's clock agrees with the control plane's. Each failure has a
// class with its own exit code and a one-line cause with what to do.
package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"berth.dev/berth/agent/bootstrap"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"berth.dev/berth/internal/node/exitcode"
)

// Class is a failure class; each maps to one exit code (docs/exit-codes.md).
type Class int

const (
	ClassDNS   Class = exitcode.DNS
	ClassTCP   Class = exitcode.Unreachable
	ClassTLS   Class = exitcode.TLS
	ClassToken Class = exitcode.Token
	ClassClock Class = exitcode.ClockSkew
	// ClassPending: the control plane has not (yet) signed cluster-info for the token; retried like 10, 11, 14.
	ClassPending Class = exitcode.Timeout
)

// Error is a failed check.
type Error struct {
	Class Class
	Check string
	Err   error
	Hint  string // what to do
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v; %s", e.Check, e.Err, e.Hint) }
func (e *Error) Unwrap() error { return e.Err }

// MaxClockSkew is how far the node's clock may be from the control plane's: certificates issued by the control
// plane must already be valid on the node.
const MaxClockSkew = 2 * time.Minute

// Options tune the checks (tests shorten the waits).
type Options struct {
	SignatureWait time.Duration
	Now           func() time.Time
	Resolver      *net.Resolver // default net.DefaultResolver
}

// Token returns the discovery token: inline, or read from tokenFile now (it may be written after the config).
func Token(d nodeconfig.Discovery) (bootstraptoken.Token, error) {
	if d.TokenFile == "" {
		if d.Token.IsZero() {
			return bootstraptoken.Token{}, errors.New("no bootstrap token: spec.controlPlane.discovery has neither token nor tokenFile")
		}
		return d.Token, nil
	}
	data, err := os.ReadFile(d.TokenFile)
	if err != nil {
		return bootstraptoken.Token{}, fmt.Errorf("tokenFile: %w", err)
	}
	return bootstraptoken.Parse(strings.TrimSpace(string(data)))
}

// Result is what the checks learned: the trusted CA, for the join.
type Result struct {
	CA     []byte
	Passed []string
}

// Run runs the checks in order and stops at the first failure (each depends on the one before).
func Run(ctx context.Context, spec nodeconfig.ControlPlane, tok bootstraptoken.Token, o Options) (Result, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	var res Result
	if err := reach(ctx, spec.Endpoint, o, &res.Passed); err != nil {
		return res, err
	}

	disc := bootstrap.Discovery{Endpoint: spec.Endpoint, Token: tok, CABundle: spec.Discovery.CABundle,
		Pins: spec.Discovery.Pins, SignatureWait: o.SignatureWait, Now: o.Now}
	found, err := bootstrap.Discover(ctx, disc)
	switch {
	case errors.Is(err, bootstrap.ErrNotSigned):
		return res, &Error{ClassPending, "token", err, "the bootstrap signer signs a new token within seconds; if this persists, the token is unknown or expired: create a new one"}
	case errors.Is(err, bootstrap.ErrCertTime):
		return res, &Error{ClassClock, "clock", err, fmt.Sprintf("check this node's clock (now %s) and time synchronisation (systemd-timesyncd, chrony)", o.Now().UTC().Format(time.RFC3339))}
	case errors.Is(err, bootstrap.ErrTokenInvalid):
		return res, &Error{ClassToken, "token", err, "create a new bootstrap token on the control plane and put it in the NodeConfig"}
	case errors.Is(err, bootstrap.ErrPinMismatch), errors.Is(err, bootstrap.ErrTLS), errors.Is(err, bootstrap.ErrTampered):
		return res, &Error{ClassTLS, "tls", err, "check caCertHashes/caBundle against the control plane's CA (and that nothing intercepts the connection)"}
	case errors.Is(err, bootstrap.ErrUnreachable):
		return res, &Error{ClassTCP, "https", err, "the port answers but not as a Kubernetes apiserver; check the endpoint"}
	case err != nil:
		return res, &Error{ClassTCP, "https", err, "check the endpoint"}
	}
	res.CA = found.CA
	res.Passed = append(res.Passed, "tls", "token")

	if err := checkClock(ctx, spec.Endpoint, found.CA, o); err != nil {
		return res, err
	}
	res.Passed = append(res.Passed, "clock")
	return res, nil
}

// reach checks that the endpoint's name resolves and its port accepts TCP, adding each check that passed to passed.
func reach(ctx context.Context, endpoint string, o Options, passed *[]string) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return &Error{ClassDNS, "endpoint", err, "fix spec.controlPlane.endpoint"}
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "443"
	}
	if net.ParseIP(host) == nil {
		if _, err := o.Resolver.LookupHost(ctx, host); err != nil {
			return &Error{ClassDNS, "dns", err, fmt.Sprintf("check that %s resolves from this node (resolv.conf, DNS servers)", host)}
		}
	}
	*passed = append(*passed, "dns")
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	if err != nil {
		return &Error{ClassTCP, "tcp", err, fmt.Sprintf("check routes and firewalls between this node and %s:%s, and that the control plane is up", host, port)}
	}
	*passed = append(*passed, "tcp")
	return conn.Close()
}

// checkClock compares the node's clock with the apiserver's, over TLS verified against ca.
func checkClock(ctx context.Context, endpoint string, ca []byte, o Options) error {
	skew, err := clockSkew(ctx, endpoint, ca, o.Now)
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return &Error{ClassClock, "clock", err, fmt.Sprintf("the apiserver's certificate is not valid at this node's time (%s): check its clock and time synchronisation", o.Now().UTC().Format(time.RFC3339))}
	case errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid):
		return &Error{ClassTLS, "tls", err, "the endpoint does not present a certificate for its address signed by the trusted CA; check the endpoint and that nothing intercepts the connection"}
	case err != nil:
		return &Error{ClassTCP, "https", err, "the apiserver did not answer /healthz"}
	}
	if skew > MaxClockSkew || skew < -MaxClockSkew {
		return &Error{ClassClock, "clock", fmt.Errorf("this node's clock is %v off the control plane's (at most %v)", skew.Round(time.Second), MaxClockSkew),
			"fix time synchronisation (systemd-timesyncd, chrony) on this node"}
	}
	return nil
}

// Pinned checks that every certificate of the CA a node joined with (ca, from its disk) is still trusted by the
// NodeConfig: its key matches one of the pins, or it is one of the caBundle's certificates. A control plane whose CA
// changed, or a pin removed after a CA rotation, is caught here rather than trusted on because the node joined
// once.
func Pinned(ca []byte, d nodeconfig.Discovery) error {
	certs, err := capin.ParseCerts(ca)
	if err != nil {
		return fmt.Errorf("the CA this node joined with: %w", err)
	}
	if len(certs) == 0 {
		return errors.New("the CA this node joined with holds no certificate")
	}
	allowed := d.Pins
	if len(allowed) == 0 {
		bundle, err := capin.ParseCerts(d.CABundle)
		if err != nil {
			return fmt.Errorf("spec.controlPlane.discovery.caBundle: %w", err)
		}
		for _, c := range bundle {
			allowed = append(allowed, capin.Of(c))
		}
	}
	for _, c := range certs {
		if p := capin.Of(c); !slices.Contains(allowed, p) {
			return fmt.Errorf("the CA this node joined with (%q, %s) is not in spec.controlPlane.discovery (caCertHashes or caBundle)", c.Subject.CommonName, p)
		}
	}
	return nil
}

// Recheck verifies a joined node's control plane again, from what the node trusts since its join (the CA on its
// disk) rather than a bootstrap token, which it no longer has: the CA is still pinned (Pinned), the endpoint
// resolves and accepts TCP, serves a certificate signed by that CA, and agrees on the time. The agent runs it when
// the endpoint differs from the one the node joined through.
func Recheck(ctx context.Context, spec nodeconfig.ControlPlane, ca []byte, o Options) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if err := Pinned(ca, spec.Discovery); err != nil {
		return &Error{ClassTLS, "pin", err, PinHint}
	}
	if err := reach(ctx, spec.Endpoint, o, new([]string)); err != nil {
		return err
	}
	return checkClock(ctx, spec.Endpoint, ca, o)
}

// PinHint is what to do when a joined node's CA is no longer pinned.
const PinHint = "if the control plane's CA changed, join the node again: give it a new token and remove /var/lib/kubelet/kubeconfig; otherwise restore the pin"

// clockSkew compares the node's clock with the Date header of the apiserver's anonymous /healthz.
func clockSkew(ctx context.Context, endpoint string, ca []byte, now func() time.Time) (time.Duration, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, Proxy: nil}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(endpoint, "/")+"/healthz", nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return 0, fmt.Errorf("no Date header: %w", err)
	}
	return now().Sub(date), nil
}
