// Package mountopts builds a share's mount options: berth's defaults for its protocol, the volume's own
// options (a StorageClass's or PersistentVolume's mountOptions) over them, and what only berth sets (the pod's
// group, read-only). It refuses, naming each option, options that contradict each other or berth, and options
// that would put a credential where everyone who can read the PersistentVolume sees it.
package mountopts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Protocol is a share's protocol.
type Protocol string

const (
	// SMB is SMB 2/3 through the kernel's cifs client (mount.cifs).
	SMB Protocol = "smb"
	// NFS is NFSv4 through the kernel's nfs client (mount.nfs).
	NFS Protocol = "nfs"
)

// Defaults are berth's options per protocol, in the order they are passed. SMB: 3.0 is the newest dialect the
// Ubuntu 16.04 kernel speaks well; modes open to the pod's user (ownership does not change on cifs);
// mfsymlinks for symlinks on servers without unix extensions; strict caching; 30 s attribute cache; a socket
// of its own per mount (reconnects of one share do not race another's). NFS: 4.1, hard (no silent data loss on a
// server restart), and a non-reserved source port so a reconnect need not wait for the old port.
var Defaults = map[Protocol][]string{
	SMB: {"vers=3.0", "dir_mode=0777", "file_mode=0777", "mfsymlinks", "cache=strict", "actimeo=30", "nosharesock"},
	NFS: {"nfsvers=4.1", "hard", "noresvport"},
}

// Request is one mount's options and what the pod asks of it.
type Request struct {
	Protocol Protocol
	// Options are the volume's mountOptions; an entry may hold several, comma-separated.
	Options []string
	// FSGroup is the pod's fsGroup (the CSI volume mount group), if any: an SMB share's files show this group.
	FSGroup *int64
	// ReadOnly mounts the share read-only.
	ReadOnly bool
}

// credentialKeys are options that carry a credential or point to one. A Secret supplies them; in mountOptions
// they would be in the PersistentVolume for anyone who can read it.
var credentialKeys = map[Protocol]map[string]bool{
	SMB: {"username": true, "user": true, "password": true, "pass": true, "password2": true, "credentials": true, "cred": true, "domain": true, "dom": true, "workgroup": true},
	NFS: {},
}

// exclusive maps a flag to the group of flags it contradicts; a flag in a group replaces berth's default of the
// same group.
var exclusive = map[string]string{
	"ro": "ro|rw", "rw": "ro|rw",
	"hard": "hard|soft", "soft": "hard|soft",
	"resvport": "resvport", "noresvport": "resvport",
	"sharesock": "sharesock", "nosharesock": "sharesock",
	"mfsymlinks": "mfsymlinks", "nomfsymlinks": "mfsymlinks",
	"serverino": "serverino", "noserverino": "serverino",
	"perm": "perm", "noperm": "perm",
	"brl": "brl", "nobrl": "brl",
	"ac": "ac", "noac": "ac",
	"guest": "guest",
}

// aliases are keys that name the same setting.
var aliases = map[Protocol]map[string]string{
	SMB: {"vers": "vers"},
	NFS: {"vers": "nfsvers", "nfsvers": "nfsvers"},
}

type option struct {
	text  string // as given, trimmed
	key   string // before '='
	value string
	field string // where it came from: mountOptions[i]
}

// group is what an option is compared on: its setting, with aliases and exclusive flags folded together.
func (o option) group(p Protocol) string {
	if !strings.Contains(o.text, "=") {
		if g, ok := exclusive[o.key]; ok {
			return g
		}
	}
	if a, ok := aliases[p][o.key]; ok {
		return a
	}
	return o.key
}

// Build returns the options to mount with: berth's defaults that the volume does not set, the volume's own, then
// gid from the pod's fsGroup (SMB) and ro; or every problem, each naming its option.
func Build(r Request) ([]string, error) {
	defaults, ok := Defaults[r.Protocol]
	if !ok {
		return nil, fmt.Errorf("protocol %q: want %q or %q", r.Protocol, SMB, NFS)
	}
	user, errs := parse(r.Options)
	byGroup := map[string]option{}
	for _, o := range user {
		if credentialKeys[r.Protocol][o.key] {
			errs = append(errs, fmt.Errorf("%s: option %q: a credential does not belong in mountOptions, where everyone who can read the volume sees it; put it in the Secret the StorageClass names", o.field, o.key)) // its value is never echoed
			continue
		}
		g := o.group(r.Protocol)
		if prev, ok := byGroup[g]; ok && prev.text != o.text {
			errs = append(errs, fmt.Errorf("%s: %q conflicts with %s: %q", o.field, o.text, prev.field, prev.text))
			continue
		}
		byGroup[g] = o
	}
	if r.ReadOnly {
		if o, ok := byGroup["ro|rw"]; ok && o.key == "rw" {
			errs = append(errs, fmt.Errorf("%s: %q conflicts with the volume mounted read-only", o.field, o.text))
		}
	}
	if r.Protocol == SMB && r.FSGroup != nil {
		if o, ok := byGroup["gid"]; ok && o.value != strconv.FormatInt(*r.FSGroup, 10) {
			errs = append(errs, fmt.Errorf("%s: %q conflicts with the pod's fsGroup %d", o.field, o.text, *r.FSGroup))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	var out []string
	for _, d := range defaults {
		o := split(d)
		if _, set := byGroup[o.group(r.Protocol)]; !set {
			out = append(out, d)
		}
	}
	seen := map[string]bool{}
	for _, o := range user {
		if !seen[o.text] { // the same option twice is passed once
			out = append(out, o.text)
			seen[o.text] = true
		}
	}
	if r.Protocol == SMB && r.FSGroup != nil {
		if _, set := byGroup["gid"]; !set {
			out = append(out, "gid="+strconv.FormatInt(*r.FSGroup, 10))
		}
	}
	if r.ReadOnly {
		if o, ok := byGroup["ro|rw"]; !ok || o.key != "ro" {
			out = append(out, "ro")
		}
	}
	return out, nil
}

func split(text string) option {
	k, v, _ := strings.Cut(text, "=")
	return option{text: text, key: strings.ToLower(k), value: v}
}

// parse splits the entries at commas and checks each option's shape: a key of letters, digits, '_', '.' or '-',
// and a value without control characters. Errors name the option by its key only: a value may be a secret.
func parse(entries []string) ([]option, []error) {
	var out []option
	var errs []error
	for i, e := range entries {
		field := fmt.Sprintf("mountOptions[%d]", i)
		for _, part := range strings.Split(e, ",") {
			text := strings.TrimSpace(part)
			o := split(text)
			o.field = field
			switch {
			case text == "":
				errs = append(errs, fmt.Errorf("%s: an empty option (two commas in a row, or one at an end)", field))
			case !validKey(o.key):
				errs = append(errs, fmt.Errorf("%s: option %q: an option's name is letters, digits, '_', '.' or '-'", field, cut(o.key)))
			case strings.ContainsFunc(o.value, func(r rune) bool { return r < 0x20 || r == 0x7f }):
				errs = append(errs, fmt.Errorf("%s: option %q: its value holds a control character", field, o.key))
			default:
				out = append(out, o)
			}
		}
	}
	return out, errs
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}

// cut shortens what an error quotes.
func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
