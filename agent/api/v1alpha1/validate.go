package v1alpha1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"berth.dev/berth/agent/api/strict"
	"berth.dev/berth/internal/node/bootstraptoken"
	"berth.dev/berth/internal/node/capin"
	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	kubeletv1beta1 "k8s.io/kubelet/config/v1beta1"
)

// sysctlName is a sysctl key as sysctl.d accepts it (dots or slashes between components).
var sysctlName = regexp.MustCompile(`^[a-z0-9_]+([./][a-zA-Z0-9_-]+)+$`)

// Validate returns every problem with c, each with its field path. Secrets are never echoed.
func (c *NodeConfig) Validate() field.ErrorList {
	errs := strict.TypeMeta(c.APIVersion, c.Kind, APIVersion, Kind)
	spec := field.NewPath("spec")
	errs = append(errs, c.Spec.ControlPlane.validate(spec.Child("controlPlane"))...)
	errs = append(errs, c.Spec.Node.validate(spec.Child("node"))...)
	errs = append(errs, c.Spec.Kubelet.validate(spec.Child("kubelet"))...)
	errs = append(errs, c.Spec.Containerd.validate(spec.Child("containerd"))...)
	switch c.Spec.CNI.Mode {
	case "", "bridge", "none":
	default:
		errs = append(errs, field.NotSupported(spec.Child("cni", "mode"), c.Spec.CNI.Mode, []string{"bridge", "none"}))
	}
	for _, k := range slices.Sorted(maps.Keys(c.Spec.Sysctls)) {
		p := spec.Child("sysctls").Key(k)
		if !sysctlName.MatchString(k) {
			errs = append(errs, field.Invalid(p, k, "want a sysctl name such as net.ipv4.ip_forward"))
		}
		if strings.ContainsAny(c.Spec.Sysctls[k], "\n") {
			errs = append(errs, field.Invalid(p, c.Spec.Sysctls[k], "must be one line"))
		}
	}
	return strict.CutValues(errs)
}

// ValidateJoined is Validate for a node that has joined: the agent removed the bootstrap token after the join (from
// the drop-ins, and scrubbed it from cloud-init's copies of the user data), and the kubelet's own credentials
// replace it, so a missing or scrubbed token is no error: a joined node never uses it.
func (c *NodeConfig) ValidateJoined() field.ErrorList {
	var errs field.ErrorList
	token := field.NewPath("spec", "controlPlane", "discovery", "token").String()
	for _, e := range c.Validate() {
		if e.Field == token {
			continue
		}
		errs = append(errs, e)
	}
	return errs
}

func (cp ControlPlane) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if cp.Endpoint == "" {
		errs = append(errs, field.Required(p.Child("endpoint"), "the apiserver URL, https://host:port"))
	} else if shown, msg := checkEndpoint(cp.Endpoint); msg != "" {
		errs = append(errs, field.Invalid(p.Child("endpoint"), shown, msg))
	}
	d := p.Child("discovery")
	switch {
	case cp.Discovery.Token.IsZero() && cp.Discovery.TokenFile == "":
		errs = append(errs, field.Required(d.Child("token"), "a bootstrap token (or tokenFile)"))
	case !cp.Discovery.Token.IsZero() && cp.Discovery.TokenFile != "":
		errs = append(errs, field.Forbidden(d.Child("tokenFile"), "set token or tokenFile, not both"))
	case !cp.Discovery.Token.IsZero():
		if _, err := bootstraptoken.Parse(cp.Discovery.Token.Reveal()); err != nil {
			errs = append(errs, field.Invalid(d.Child("token"), cp.Discovery.Token, err.Error()))
		}
	case looksLikeToken(cp.Discovery.TokenFile):
		// Never echo it: it is the secret itself, pasted into the wrong field.
		errs = append(errs, field.Invalid(d.Child("tokenFile"), "<redacted>", "holds a bootstrap token itself: put the token in token, or name a file that holds it"))
	case !filepath.IsAbs(cp.Discovery.TokenFile):
		errs = append(errs, field.Invalid(d.Child("tokenFile"), cp.Discovery.TokenFile, "must be an absolute path"))
	}
	switch {
	case len(cp.Discovery.CACertHashes) == 0 && cp.Discovery.CABundle == "":
		errs = append(errs, field.Required(d.Child("caCertHashes"), "CA public-key pins (sha256:<hex>) or caBundle; a node never trusts an unverified control plane"))
	case len(cp.Discovery.CACertHashes) > 0 && cp.Discovery.CABundle != "":
		errs = append(errs, field.Forbidden(d.Child("caBundle"), "set caCertHashes or caBundle, not both"))
	}
	for i, h := range cp.Discovery.CACertHashes {
		if _, err := capin.Parse(h); err != nil {
			errs = append(errs, field.Invalid(d.Child("caCertHashes").Index(i), h, "want sha256:<64 hex digits>"))
		}
	}
	if cp.Discovery.CABundle != "" {
		if _, err := capin.ParseCerts([]byte(cp.Discovery.CABundle)); err != nil {
			errs = append(errs, field.Invalid(d.Child("caBundle"), "<PEM>", err.Error()))
		}
	}
	return errs
}

// looksLikeToken reports whether s holds a bootstrap token (alone, or within other text).
func looksLikeToken(s string) bool { return tokenShaped.MatchString(s) }

var tokenShaped = regexp.MustCompile(`[a-z0-9]{6}\.[a-z0-9]{16}`)

// checkEndpoint returns "" when endpoint is https://host[:port][/] and nothing else, or else the value to show
// (user info replaced: it would be sent on the first, unverified fetch, and may hold a secret) and what is wrong.
func checkEndpoint(endpoint string) (shown, msg string) {
	u, err := url.Parse(endpoint)
	if err != nil {
		if looksLikeToken(endpoint) || strings.Contains(endpoint, "@") {
			return "<redacted>", "not a URL; want https://host[:port]"
		}
		return endpoint, "not a URL; want https://host[:port]"
	}
	shown = endpoint
	if u.User != nil {
		c := *u
		c.User = url.User("REDACTED")
		shown = c.String()
	}
	switch {
	case u.Scheme != "https":
		return shown, "want https://host[:port]: the scheme must be https"
	case u.User != nil:
		return shown, "must not carry user info: the node authenticates with its bootstrap token, and user info would be sent before the control plane is verified"
	case u.Hostname() == "":
		return shown, "want https://host[:port]: no host"
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "", u.RawFragment != "":
		return shown, "want https://host[:port] with no path, query or fragment"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return shown, "the port must be 1-65535"
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return shown, "empty port"
	}
	return "", ""
}

func (n Node) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if n.Name != "" {
		for _, msg := range validation.IsDNS1123Subdomain(n.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), n.Name, msg))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p.Child("labels").Key(k), k, msg))
		}
		if !kubeletMaySetLabel(k) {
			errs = append(errs, field.Forbidden(p.Child("labels").Key(k), "the kubelet may not set labels in the kubernetes.io and k8s.io namespaces except node.kubernetes.io/, kubelet.kubernetes.io/ and the well-known topology labels (NodeRestriction); set it from the control plane instead"))
		}
		for _, msg := range validation.IsValidLabelValue(n.Labels[k]) {
			errs = append(errs, field.Invalid(p.Child("labels").Key(k), n.Labels[k], msg))
		}
	}
	effects := []string{string(corev1.TaintEffectNoSchedule), string(corev1.TaintEffectPreferNoSchedule), string(corev1.TaintEffectNoExecute)}
	for i, t := range n.Taints {
		tp := p.Child("taints").Index(i)
		for _, msg := range validation.IsQualifiedName(t.Key) {
			errs = append(errs, field.Invalid(tp.Child("key"), t.Key, msg))
		}
		if t.Value != "" {
			for _, msg := range validation.IsValidLabelValue(t.Value) {
				errs = append(errs, field.Invalid(tp.Child("value"), t.Value, msg))
			}
		}
		ok := false
		for _, e := range effects {
			ok = ok || string(t.Effect) == e
		}
		if !ok {
			errs = append(errs, field.NotSupported(tp.Child("effect"), t.Effect, effects))
		}
	}
	return errs
}

// kubeletMaySetLabel mirrors the kubelet's own check of --node-labels, so a bad label fails validation rather than
// the kubelet at boot.
func kubeletMaySetLabel(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return true
	}
	restricted := func(ns string) bool { return prefix == ns || strings.HasSuffix(prefix, "."+ns) }
	if !restricted("kubernetes.io") && !restricted("k8s.io") {
		return true
	}
	for _, ns := range []string{"kubelet.kubernetes.io", "node.kubernetes.io"} {
		if prefix == ns || strings.HasSuffix(prefix, "."+ns) {
			return true
		}
	}
	switch key {
	case "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os", "beta.kubernetes.io/arch",
		"beta.kubernetes.io/os", "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
		"failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
		"topology.kubernetes.io/region", "topology.kubernetes.io/zone":
		return true
	}
	return false
}

// flagName is a kubelet flag's name as extraArgs takes it: no leading dashes, nothing that could end the flag or
// the drop-in's line.
var flagName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// kubeletOwnedFields are set by berth from the rest of the NodeConfig and the join; a partial config may not
// override them.
var kubeletOwnedFields = []string{"apiVersion", "kind", "staticPodPath", "authentication", "rotateCertificates"}

func (k Kubelet) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(k.Config) > 0 {
		cp := p.Child("config")
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(k.Config, &fields); err != nil {
			errs = append(errs, field.TypeInvalid(cp, "<config>", "want an object of KubeletConfiguration fields"))
		} else {
			for _, f := range kubeletOwnedFields {
				if _, ok := fields[f]; ok {
					errs = append(errs, field.Forbidden(cp.Child(f), "set by berth"))
				}
			}
			dec := json.NewDecoder(bytes.NewReader(k.Config))
			dec.DisallowUnknownFields()
			var kc kubeletv1beta1.KubeletConfiguration
			if err := dec.Decode(&kc); err != nil {
				errs = append(errs, field.Invalid(cp, "<config>", "not a valid KubeletConfiguration: "+err.Error()))
			} else {
				errs = append(errs, validateKubeletValues(&kc, fields, cp)...)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(k.ExtraArgs)) {
		if !flagName.MatchString(name) {
			errs = append(errs, field.Invalid(p.Child("extraArgs").Key(name), name, "want a kubelet flag name without dashes, e.g. v or max-pods (lower-case letters, digits, inner dashes and dots)"))
			continue
		}
		switch name {
		case "kubeconfig", "bootstrap-kubeconfig", "config", "cert-dir", "hostname-override", "node-labels", "register-with-taints":
			errs = append(errs, field.Forbidden(p.Child("extraArgs").Key(name), "set by berth from the NodeConfig"))
		}
		// The flags reach the kubelet through a systemd Environment= and word splitting.
		if v := k.ExtraArgs[name]; strings.ContainsAny(v, " \t\n\"'\\") {
			errs = append(errs, field.Invalid(p.Child("extraArgs").Key(name), v, "must not contain whitespace, quotes or backslashes"))
		}
	}
	return errs
}

func (c Containerd) validate(p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if c.SandboxImage != "" && !strings.Contains(c.SandboxImage, ":") && !strings.Contains(c.SandboxImage, "@") {
		errs = append(errs, field.Invalid(p.Child("sandboxImage"), c.SandboxImage, "want a reference with a tag or digest"))
	}
	if _, err := c.ParseConfigTOML(); err != nil {
		errs = append(errs, field.Invalid(p.Child("configTOML"), "<toml>", "not valid TOML: "+err.Error()))
	}
	for _, host := range slices.Sorted(maps.Keys(c.RegistryMirrors)) {
		hp := p.Child("registryMirrors").Key(host)
		if host == "" || strings.ContainsAny(host, "/ ") {
			errs = append(errs, field.Invalid(hp, host, "want a registry host, e.g. docker.io"))
		}
		if len(c.RegistryMirrors[host]) == 0 {
			errs = append(errs, field.Required(hp, "at least one mirror endpoint"))
		}
		for i, m := range c.RegistryMirrors[host] {
			if u, err := url.Parse(m); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				errs = append(errs, field.Invalid(hp.Index(i), m, "want an http(s) URL"))
			}
		}
	}
	return errs
}

// ParseConfigTOML decodes ConfigTOML (nil when empty); a syntax error gives its line and column.
func (c Containerd) ParseConfigTOML() (map[string]any, error) {
	if c.ConfigTOML == "" {
		return nil, nil
	}
	var doc map[string]any
	if err := toml.Unmarshal([]byte(c.ConfigTOML), &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("line %d, column %d: %w", row, col, err)
		}
		return nil, err
	}
	return doc, nil
}
