package v1alpha1

import (
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"berth.dev/berth/agent/api/strict"
)

// Defaults.
const (
	DefaultPodLogPath   = "/var/log/pods"
	DefaultStateDir     = "/var/lib/berth/logs"
	DefaultMaxLineBytes = 1 << 20
	DefaultIndex        = "berth-logs"
	// The kubelet from a pod on the host network, its self-signed serving certificate through the DaemonSet's
	// read-only mount of the host's / at /host, and the pod's ServiceAccount token.
	DefaultKubeletURL      = "https://127.0.0.1:10250"
	DefaultKubeletCertFile = "/host/var/lib/kubelet/pki/kubelet.crt"
	DefaultTokenFile       = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

var collectorName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// absPath is a problem if v is set and not an absolute, clean path.
func absPath(p *field.Path, v string) field.ErrorList {
	if v != "" && (!filepath.IsAbs(v) || filepath.Clean(v) != v) {
		return field.ErrorList{field.Invalid(p, v, "an absolute, clean path")}
	}
	return nil
}

// Validate returns every problem with c, each with its field path.
func (c *LogShipperConfig) Validate() field.ErrorList {
	errs := strict.TypeMeta(c.APIVersion, c.Kind, APIVersion, Kind)
	spec := field.NewPath("spec")
	errs = append(errs, absPath(spec.Child("podLogs", "path"), c.Spec.PodLogs.Path)...)
	errs = append(errs, absPath(spec.Child("stateDir"), c.Spec.StateDir)...)
	if j := c.Spec.Journal; j != nil {
		jp := spec.Child("journal")
		errs = append(errs, absPath(jp.Child("hostRoot"), j.HostRoot)...)
		errs = append(errs, absPath(jp.Child("directory"), j.Directory)...)
		if len(j.Command) > 0 && !filepath.IsAbs(j.Command[0]) && j.Command[0] != "journalctl" {
			errs = append(errs, field.Invalid(jp.Child("command").Index(0), j.Command[0], "an absolute path (or journalctl, found on PATH)"))
		}
	}
	if m := c.Spec.Metrics; m != nil {
		mp := spec.Child("metrics")
		if n := m.Node; n != nil {
			np := mp.Child("node")
			errs = append(errs, absPath(np.Child("hostRoot"), n.HostRoot)...)
			seen := map[string]bool{}
			for i, name := range n.Collectors {
				if !collectorName.MatchString(name) {
					errs = append(errs, field.Invalid(np.Child("collectors").Index(i), name, "a node_exporter collector name (lower case letters, digits, _)"))
				} else if seen[name] {
					errs = append(errs, field.Duplicate(np.Child("collectors").Index(i), name))
				}
				seen[name] = true
			}
		}
		if p := m.Pods; p != nil {
			pp := mp.Child("pods")
			if p.KubeletURL != "" {
				if u, err := url.Parse(p.KubeletURL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
					errs = append(errs, field.Invalid(pp.Child("kubeletURL"), p.KubeletURL, "an https URL with a host and no user info, query or fragment"))
				}
			}
			errs = append(errs, absPath(pp.Child("kubeletCertFile"), p.KubeletCertFile)...)
			errs = append(errs, absPath(pp.Child("tokenFile"), p.TokenFile)...)
		}
	}
	if n := c.Spec.PodLogs.MaxLineBytes; n != 0 && (n < 16<<10 || n > 16<<20) {
		errs = append(errs, field.Invalid(spec.Child("podLogs", "maxLineBytes"), n, "between 16384 (16 KiB) and 16777216 (16 MiB)"))
	}
	sinks := spec.Child("sinks")
	if len(c.Spec.Sinks) == 0 {
		errs = append(errs, field.Required(sinks, "at least one sink"))
	}
	names := map[string]bool{}
	for i, s := range c.Spec.Sinks {
		sp := sinks.Index(i)
		for _, msg := range validation.IsDNS1123Label(s.Name) {
			errs = append(errs, field.Invalid(sp.Child("name"), s.Name, msg))
		}
		if names[s.Name] {
			errs = append(errs, field.Duplicate(sp.Child("name"), s.Name))
		}
		names[s.Name] = true
		switch s.Type {
		case SinkOTLP, SinkLoki, SinkElasticsearch:
		default:
			errs = append(errs, field.NotSupported(sp.Child("type"), s.Type, []string{SinkOTLP, SinkLoki, SinkElasticsearch}))
		}
		errs = append(errs, validURL(sp.Child("url"), s.URL)...)
		if s.Index != "" && s.Type != SinkElasticsearch {
			errs = append(errs, field.Forbidden(sp.Child("index"), "only for type elasticsearch"))
		}
		for k := range s.Headers {
			if !httpguts.ValidHeaderFieldName(k) {
				errs = append(errs, field.Invalid(sp.Child("headers").Key(k), k, "not an HTTP header name"))
			} else if !httpguts.ValidHeaderFieldValue(s.Headers[k]) {
				errs = append(errs, field.Invalid(sp.Child("headers").Key(k), "(value not shown)", "the value holds a control character"))
			}
			if strings.EqualFold(k, "Content-Type") || strings.EqualFold(k, "Content-Length") {
				errs = append(errs, field.Forbidden(sp.Child("headers").Key(k), "set by the sink"))
			}
		}
		inHeaders := map[string]bool{}
		for k := range s.Headers {
			inHeaders[http.CanonicalHeaderKey(k)] = true
		}
		for k, f := range s.HeadersFromFiles {
			hp := sp.Child("headersFromFiles").Key(k)
			switch {
			case !httpguts.ValidHeaderFieldName(k):
				errs = append(errs, field.Invalid(hp, k, "not an HTTP header name"))
			case strings.EqualFold(k, "Content-Type") || strings.EqualFold(k, "Content-Length"):
				errs = append(errs, field.Forbidden(hp, "set by the sink"))
			case inHeaders[http.CanonicalHeaderKey(k)]:
				errs = append(errs, field.Duplicate(hp, k))
			}
			if f == "" {
				errs = append(errs, field.Required(hp, "the file holding the value"))
			}
			errs = append(errs, absPath(hp, f)...)
		}
		if t := s.TLS; t != nil {
			tp := sp.Child("tls")
			if !strings.HasPrefix(s.URL, "https://") {
				errs = append(errs, field.Forbidden(tp, "only for an https URL"))
			}
			errs = append(errs, absPath(tp.Child("caFile"), t.CAFile)...)
			errs = append(errs, absPath(tp.Child("certFile"), t.CertFile)...)
			errs = append(errs, absPath(tp.Child("keyFile"), t.KeyFile)...)
			if (t.CertFile == "") != (t.KeyFile == "") {
				errs = append(errs, field.Required(tp.Child("keyFile"), "certFile and keyFile go together"))
			}
		}
		b := sp.Child("batch")
		if n := s.Batch.Records; n < 0 || n > 100000 {
			errs = append(errs, field.Invalid(b.Child("records"), n, "between 1 and 100000 (0: the default, 1000)"))
		}
		if n := s.Batch.Bytes; n < 0 || n > 64<<20 {
			errs = append(errs, field.Invalid(b.Child("bytes"), n, "between 1 and 67108864 (0: the default, 1 MiB)"))
		}
		if d := s.Batch.Linger.Duration; d < 0 || d > time.Minute {
			errs = append(errs, field.Invalid(b.Child("linger"), d.String(), "between 0 and 1m"))
		}
		r := sp.Child("retry")
		if d := s.Retry.Initial.Duration; d != 0 && (d < 10*time.Millisecond || d > 10*time.Minute) {
			errs = append(errs, field.Invalid(r.Child("initial"), d.String(), "between 10ms and 10m"))
		}
		if d := s.Retry.Max.Duration; d != 0 && (d > 10*time.Minute || d < max(s.Retry.Initial.Duration, 10*time.Millisecond)) {
			errs = append(errs, field.Invalid(r.Child("max"), d.String(), "between initial and 10m"))
		}
	}
	return strict.CutValues(errs)
}

func validURL(p *field.Path, s string) field.ErrorList {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return field.ErrorList{field.Required(p, "the backend's base URL")}
	case err != nil:
		return field.ErrorList{field.Invalid(p, s, err.Error())}
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return field.ErrorList{field.Invalid(p, s, "an http:// or https:// URL with a host")}
	case u.User != nil:
		// Never echo the credentials.
		return field.ErrorList{field.Invalid(p, u.Redacted(), "no user info: put credentials in headers")}
	case u.RawQuery != "" || u.Fragment != "":
		return field.ErrorList{field.Invalid(p, s, "no query or fragment")}
	}
	return nil
}

// Defaulted is c's spec with every default filled in.
func (c *LogShipperConfig) Defaulted() LogShipperConfigSpec {
	s := c.Spec
	if s.PodLogs.Path == "" {
		s.PodLogs.Path = DefaultPodLogPath
	}
	if s.PodLogs.MaxLineBytes == 0 {
		s.PodLogs.MaxLineBytes = DefaultMaxLineBytes
	}
	if s.StateDir == "" {
		s.StateDir = DefaultStateDir
	}
	if s.Metrics != nil && s.Metrics.Pods != nil {
		p := *s.Metrics.Pods
		if p.KubeletURL == "" {
			p.KubeletURL = DefaultKubeletURL
		}
		if p.KubeletCertFile == "" {
			p.KubeletCertFile = DefaultKubeletCertFile
		}
		if p.TokenFile == "" {
			p.TokenFile = DefaultTokenFile
		}
		m := *s.Metrics
		m.Pods = &p
		s.Metrics = &m
	}
	s.Sinks = append([]Sink(nil), s.Sinks...)
	for i := range s.Sinks {
		k := &s.Sinks[i]
		if k.Type == SinkElasticsearch && k.Index == "" {
			k.Index = DefaultIndex
		}
		if k.Batch.Records == 0 {
			k.Batch.Records = 1000
		}
		if k.Batch.Bytes == 0 {
			k.Batch.Bytes = 1 << 20
		}
		if k.Batch.Linger.Duration == 0 {
			k.Batch.Linger.Duration = time.Second
		}
		if k.Retry.Initial.Duration == 0 {
			k.Retry.Initial.Duration = 500 * time.Millisecond
		}
		if k.Retry.Max.Duration == 0 {
			k.Retry.Max.Duration = 30 * time.Second
		}
	}
	return s
}

// Header is the sink's headers as an http.Header.
func (s Sink) Header() http.Header {
	h := http.Header{}
	for k, v := range s.Headers {
		h.Set(k, v)
	}
	return h
}
