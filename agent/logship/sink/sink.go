// Package sink is what the log shipper's backends share: the record a sink sends, and how a sink says what
// became of a batch (all of it taken; all of it to be sent again; some records refused for good, some to be sent
// again), so that the delivery loop commits only what a backend acknowledged.
package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"strconv"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Record is one log line with its metadata.
type Record struct {
	Time time.Time
	// Body is the line (a string: every backend's encoding takes one, so it is copied once, from the file).
	Body string
	// Attrs are the record's fields (kubernetes.namespace, kubernetes.pod, kubernetes.container, node, stream,
	// labels), in a stable order. Records of one container and stream read together share one slice (sinks use
	// that to encode the fields once): nothing may change it.
	Attrs []Attr
	// Key identifies the record for a backend that deduplicates: the file's identity and the line's offset.
	Key string
}

// Attr is a field of a record.
type Attr struct{ Key, Value string }

// Sink sends a batch of records. A nil error means the backend took all of them.
type Sink interface {
	Name() string
	Send(ctx context.Context, batch []Record) error
}

// Error is what a backend did not take. Retry says the whole batch is to be sent again (a transient failure:
// a connection error, 429, 5xx); otherwise Rejected are the indexes of records refused for good (a dead letter
// each, with the reason), Again those to send again and Dropped those refused without an index; the others were
// taken.
type Error struct {
	Sink       string
	Retry      bool
	RetryAfter time.Duration // the backend's Retry-After, if it sent one
	Rejected   map[int]string
	Again      []int
	// Dropped counts records the backend refused for good without saying which (an OTLP partial success): the
	// batch is taken, and a dead-letter entry records the count and reason.
	Dropped int
	Err     error
}

func (e *Error) Error() string {
	switch {
	case e.Retry:
		return fmt.Sprintf("sink %s: %v (retried)", e.Sink, e.Err)
	default:
		return fmt.Sprintf("sink %s: %d records refused, %d to send again: %v", e.Sink, len(e.Rejected), len(e.Again), e.Err)
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Transient wraps err as a failure of the whole batch that is to be retried.
func Transient(sink string, err error) *Error { return &Error{Sink: sink, Retry: true, Err: err} }

// Status classifies an HTTP answer to a whole batch as OTLP/HTTP and Loki clients do: 2xx taken; 429, 502, 503,
// 504 (and other 5xx) retried, honouring Retry-After; other 4xx refused for good (every record a dead letter).
// Unlike those clients, 401 and 403 are retried too: the backend refused the credentials, not the records, and a
// credential being rotated (a Secret updated after the backend) must not turn a minute of logs into dead letters.
func Status(sink string, resp *http.Response, body []byte, n int) error {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	err := fmt.Errorf("HTTP %d: %s", resp.StatusCode, cut(body))
	if Retried(resp.StatusCode) {
		e := Transient(sink, err)
		e.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
		return e
	}
	rejected := make(map[int]string, n)
	for i := range n {
		rejected[i] = err.Error()
	}
	return &Error{Sink: sink, Rejected: rejected, Err: err}
}

// Retried reports whether an HTTP status to a whole batch means sending it again: 401, 403, 429 and 5xx.
func Retried(code int) bool {
	return code == http.StatusUnauthorized || code == http.StatusForbidden || code == http.StatusTooManyRequests || code >= 500
}

func retryAfter(v string) time.Duration {
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// cut is at most 256 bytes of a backend's answer, for messages.
func cut(b []byte) string {
	if len(b) > 256 {
		return strconv.Quote(string(b[:256])) + "…"
	}
	return strconv.Quote(string(b))
}

// IsRetry reports whether err asks for the whole batch to be sent again: an *Error with Retry, or any error that
// is not an *Error (a bug in a sink must not drop data).
func IsRetry(err error) bool {
	var e *Error
	return err != nil && (!errors.As(err, &e) || e.Retry)
}

// HTTP is what the HTTP sinks share: the backend's base URL, headers sent with every request, and the client
// (default: one with a 30 s timeout).
type HTTP struct {
	URL    string
	Header http.Header
	// HeaderFiles are headers whose values are files' contents, read for every request (credentials from a
	// mounted Secret, which the kubelet updates in place): name → path.
	HeaderFiles map[string]string
	Client      *http.Client
}

// maxHeaderFile bounds a header value read from a file.
const maxHeaderFile = 64 << 10

// headerFile is the header value in the file at path: its content without a trailing newline. The content is
// never put in an error.
func headerFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxHeaderFile+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxHeaderFile {
		return "", fmt.Errorf("%s: larger than %d bytes", path, maxHeaderFile)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if !httpguts.ValidHeaderFieldValue(v) {
		return "", fmt.Errorf("%s: not a valid header value (a control character or a line break inside)", path)
	}
	return v, nil
}

// TLSClient is an HTTP client (30 s timeout) that trusts the CAs in caFile (the system's roots if empty) and
// shows the client certificate in certFile and keyFile when the server asks (none if empty), read at each new
// connection so that a renewed one is used. Each file is read once now, so that a missing or bad one is an error
// at start.
func TLSClient(caFile, certFile, keyFile string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile: no PEM certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" {
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return nil, fmt.Errorf("certFile, keyFile: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			return &c, err
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Timeout: 30 * time.Second, Transport: tr}, nil
}

// Post sends body to the base URL joined with path and returns the answer's status and up to limit bytes of its
// body. A request that gets no answer (connection refused, timeout, the answer cut off) is a Transient error.
func (h HTTP) Post(ctx context.Context, name, path, contentType string, body []byte, limit int64) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("sink %s: %w", name, err)
	}
	for k, v := range h.Header {
		req.Header[k] = v
	}
	for k, path := range h.HeaderFiles {
		v, err := headerFile(path)
		if err != nil {
			return nil, nil, Transient(name, fmt.Errorf("header %s: %w", k, err))
		}
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", contentType)
	client := h.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, Transient(name, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, nil, Transient(name, fmt.Errorf("reading the answer: %w", err))
	}
	return resp, answer, nil
}
