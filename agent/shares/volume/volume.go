// Package volume reads what a share volume is from its CSI volume context (a StorageClass's parameters, a
// PersistentVolume's volumeAttributes): the share's source, its protocol (from the source's shape), and the
// subdirectory of the share that is the volume; and the credentials from the Secret the kubelet passes. Every
// problem is named by its key.
package volume

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strings"

	"berth.dev/berth/agent/shares/mountopts"
)

// Context keys.
const (
	// KeySource is the share: //server/share for SMB, server:/export for NFS.
	KeySource = "source"
	// KeySubDir is the directory of the share that is the volume (default: the whole share).
	KeySubDir = "subDir"
)

// Secret keys (SMB).
const (
	KeyUsername = "username"
	KeyPassword = "password"
	KeyDomain   = "domain"
)

// Volume is one share volume.
type Volume struct {
	Protocol mountopts.Protocol
	Server   string // a host name or an IP address
	Share    string // SMB: the share's name; NFS: the export's path
	SubDir   string // relative, clean; "" for the whole share
}

// Source is what mount(8) is given: //server/share or server:/export ([address]:/export for IPv6).
func (v Volume) Source() string {
	if v.Protocol == mountopts.SMB {
		return "//" + v.Server + "/" + v.Share
	}
	if strings.Contains(v.Server, ":") { // an IPv6 address
		return "[" + v.Server + "]:" + v.Share
	}
	return v.Server + ":" + v.Share
}

// Parse reads a volume from its context; unknown keys are refused (a misspelt subDir must not mount the whole
// share), except the csi.storage.k8s.io/ ones the provisioner and kubelet add.
func Parse(ctx map[string]string) (Volume, error) {
	var v Volume
	var errs []error
	for k := range ctx {
		if k != KeySource && k != KeySubDir && !strings.HasPrefix(k, "csi.storage.k8s.io/") && !strings.HasPrefix(k, "storage.kubernetes.io/") {
			errs = append(errs, fmt.Errorf("%s: unknown key (want %s, %s)", k, KeySource, KeySubDir))
		}
	}
	src := ctx[KeySource]
	switch {
	case src == "":
		errs = append(errs, fmt.Errorf("%s: required: //server/share (SMB) or server:/export (NFS)", KeySource))
	case strings.HasPrefix(src, "//"):
		v.Protocol = mountopts.SMB
		server, share, ok := strings.Cut(strings.TrimPrefix(src, "//"), "/")
		share = strings.TrimSuffix(share, "/")
		if !ok || share == "" || strings.ContainsAny(share, "/\\") {
			errs = append(errs, fmt.Errorf("%s: %q: want //server/share (a share's name has no slash; use %s for a directory in it)", KeySource, src, KeySubDir))
		}
		v.Server, v.Share = server, share
	case strings.Contains(src, ":/") && !strings.Contains(src, "://"):
		v.Protocol = mountopts.NFS
		server, export, _ := strings.Cut(src, ":")
		if strings.HasPrefix(server, "[") && strings.Contains(src, "]:/") { // [v6]:/export
			server, export, _ = strings.Cut(strings.TrimPrefix(src, "["), "]:")
		}
		if export != path.Clean(export) {
			errs = append(errs, fmt.Errorf("%s: %q: the export path is not clean (want %s)", KeySource, src, path.Clean(export)))
		}
		v.Server, v.Share = server, export
	default:
		errs = append(errs, fmt.Errorf("%s: %q: want //server/share (SMB) or server:/export (NFS)", KeySource, src))
	}
	if src != "" && v.Protocol != "" {
		if err := checkServer(v.Server); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q: %w", KeySource, src, err))
		}
	}
	if d := ctx[KeySubDir]; d != "" {
		clean := path.Clean(strings.Trim(d, "/"))
		if strings.HasPrefix(d, "/") || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsAny(d, "\\\x00\n") {
			errs = append(errs, fmt.Errorf("%s: %q: want a relative path inside the share", KeySubDir, d))
		} else if clean != "." {
			v.SubDir = clean
		}
	}
	return v, errors.Join(errs...)
}

// checkServer accepts an IP address or a DNS name (RFC 1123 labels).
func checkServer(s string) error {
	if s == "" {
		return errors.New("no server")
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if len(s) > 253 {
		return errors.New("the server's name is longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("server %q is not a host name or an IP address", s)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("server %q is not a host name or an IP address", s)
			}
		}
	}
	return nil
}

// Credentials are an SMB share's user; a zero value mounts as guest.
type Credentials struct {
	Username, Domain string
	Password         Secret
}

// Secret is a password: it never prints.
type Secret string

// String hides the secret.
func (Secret) String() string { return "<redacted>" }

// GoString hides the secret.
func (Secret) GoString() string { return "<redacted>" }

// Format hides the secret under every verb.
func (Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, "<redacted>") }

// ParseSecret reads SMB credentials from the Secret's data the kubelet passes (no Secret: guest). A Secret with a
// password needs a username; unknown keys are refused. Problems name the key, never a value.
func ParseSecret(p mountopts.Protocol, data map[string]string) (Credentials, error) {
	if len(data) == 0 {
		return Credentials{}, nil
	}
	if p != mountopts.SMB {
		return Credentials{}, errors.New("the Secret: NFS (sec=sys) takes no credentials; name no Secret for an NFS share")
	}
	var errs []error
	for k := range data {
		if k != KeyUsername && k != KeyPassword && k != KeyDomain {
			errs = append(errs, fmt.Errorf("the Secret's key %q: unknown (want %s, %s, %s)", k, KeyUsername, KeyPassword, KeyDomain))
		}
	}
	c := Credentials{Username: data[KeyUsername], Domain: data[KeyDomain], Password: Secret(data[KeyPassword])}
	if c.Username == "" {
		errs = append(errs, fmt.Errorf("the Secret has no %q key", KeyUsername))
	}
	for k, v := range map[string]string{KeyUsername: c.Username, KeyDomain: c.Domain, KeyPassword: string(c.Password)} {
		if strings.ContainsAny(v, "\n\x00") {
			errs = append(errs, fmt.Errorf("the Secret's key %q holds a newline or NUL", k))
		}
	}
	return c, errors.Join(errs...)
}
