// Package config turns a node's configuration sources into one NodeConfig: the NodeConfig part of cloud-init user
// data (a MIME multipart part of type application/node.berth.dev, optionally base64 and gzip), then the drop-ins
// in /etc/berth/config.d/ (*.yaml, *.yml, *.json) in lexical order. Later sources override earlier ones with JSON
// merge-patch semantics (objects merge, lists and values replace, null deletes). Every source is decoded strictly
// on its own, so an error names the source; the merged result is decoded and validated again.
package config

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/configfile"
	"berth.dev/berth/agent/mergepatch"
	"berth.dev/berth/internal/node/layout"
)

// MediaType is the MIME type of the NodeConfig part in multipart user data.
const MediaType = "application/node.berth.dev"

// Source is one configuration document and where it came from.
type Source struct {
	Name string // for errors: "user-data", or a file path
	Data []byte
}

// MaxSize bounds a drop-in and the NodeConfig part of user data (decoded): a NodeConfig is a few KiB, and a
// bigger source is refused rather than cut short or read into memory whole.
const MaxSize = configfile.MaxSize

// maxNesting bounds how deep multipart user data may nest (cloud-init accepts nested multipart).
const maxNesting = 4

// FromUserData returns the NodeConfig part of multipart user data, or nil when the user data has none (plain
// #cloud-config delivers the NodeConfig as a drop-in with write_files instead). User data that starts as a MIME
// document but does not parse, a part cut short, a part over MaxSize, and a second NodeConfig part are errors
// that name the part ("part 2", or "part 2.1" inside a nested multipart), never "no NodeConfig".
func FromUserData(userData []byte) ([]byte, error) {
	msg, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(userData)))
	if err != nil {
		if looksLikeMIME(userData) {
			return nil, fmt.Errorf("user-data: MIME header: %w", err)
		}
		return nil, nil // not a MIME document
	}
	ct := msg.Header.Get("Content-Type")
	mediaType, params, err := mime.ParseMediaType(ct)
	if err != nil {
		if ct != "" {
			return nil, fmt.Errorf("user-data: Content-Type header %q: %w", ct, err)
		}
		return nil, nil
	}
	if !strings.HasPrefix(mediaType, "multipart/") {
		return nil, nil
	}
	var found []byte
	if err := findPart(msg.Body, params["boundary"], "", 1, &found); err != nil {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	return found, nil
}

// looksLikeMIME reports whether data begins with a MIME header (as multipart user data does).
func looksLikeMIME(data []byte) bool {
	head := strings.ToLower(string(data[:min(len(data), 64)]))
	return strings.HasPrefix(head, "content-type:") || strings.HasPrefix(head, "mime-version:")
}

// findPart walks one multipart body (prefix names its parts: "" at the top, "2." inside the top's part 2), storing
// the NodeConfig part's decoded body in found.
func findPart(body io.Reader, boundary, prefix string, depth int, found *[]byte) error {
	if boundary == "" {
		return fmt.Errorf("%smultipart without a boundary", strings.TrimSuffix(prefix, "."))
	}
	mr := multipart.NewReader(body, boundary)
	for i := 1; ; i++ {
		name := fmt.Sprintf("part %s%d", prefix, i)
		part, err := mr.NextRawPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w (cut short, or a malformed part header?)", name, err)
		}
		pt, params, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if strings.HasPrefix(pt, "multipart/") {
			if depth >= maxNesting {
				return fmt.Errorf("%s: multipart nested deeper than %d levels", name, maxNesting)
			}
			if err := findPart(part, params["boundary"], prefix+strconv.Itoa(i)+".", depth+1, found); err != nil {
				return err
			}
			continue
		}
		if pt != MediaType {
			continue
		}
		if *found != nil {
			return fmt.Errorf("%s: a second %s part (only one is allowed)", name, MediaType)
		}
		var r io.Reader = part
		switch enc := strings.ToLower(part.Header.Get("Content-Transfer-Encoding")); enc {
		case "", "7bit", "8bit", "binary":
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, r)
		default:
			return fmt.Errorf("%s: unsupported Content-Transfer-Encoding %q", name, enc)
		}
		data, err := configfile.ReadBounded(r)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				return fmt.Errorf("%s: gzip: %w", name, err)
			}
			if data, err = configfile.ReadBounded(zr); err != nil {
				return fmt.Errorf("%s: gzip: %w", name, err)
			}
		}
		*found = data
	}
}

// ErrNoConfig is Merge's error when there is no source at all: no user data part and no drop-in.
var ErrNoConfig = fmt.Errorf("no NodeConfig: no %s part in user data and no drop-in in %s", MediaType, layout.DropInDir)

// DropIns reads the drop-ins of dir in lexical order; a missing dir has none.
func DropIns(dir string) ([]Source, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
	}
	sort.Strings(names)
	var out []Source
	for _, n := range names {
		path := filepath.Join(dir, n)
		data, err := configfile.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		out = append(out, Source{Name: path, Data: data})
	}
	return out, nil
}

// Merge decodes every source strictly, merges them in order and returns the validated result. Errors name the
// source, or the field path in the merged config.
func Merge(sources []Source) (*v1alpha1.NodeConfig, error) {
	return merge(sources, (*v1alpha1.NodeConfig).Validate)
}

// MergeJoined is Merge on a node that has joined (see NodeConfig.ValidateJoined).
func MergeJoined(sources []Source) (*v1alpha1.NodeConfig, error) {
	return merge(sources, (*v1alpha1.NodeConfig).ValidateJoined)
}

func merge(sources []Source, validate func(*v1alpha1.NodeConfig) field.ErrorList) (*v1alpha1.NodeConfig, error) {
	if len(sources) == 0 {
		return nil, ErrNoConfig
	}
	// One pass: every source's unknown and duplicate fields, and then the merged document's invalid values, are
	// reported together, so a user fixes everything at once (kubeadm stops at the first).
	var problems []error
	var merged map[string]any
	for _, s := range sources {
		_, js, err := v1alpha1.DecodeJSON(s.Data)
		var strict *v1alpha1.StrictError
		if errors.As(err, &strict) {
			problems = append(problems, fmt.Errorf("%s: %w", s.Name, err))
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		var doc map[string]any
		if err := json.Unmarshal(js, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		merged = mergepatch.Apply(merged, doc)
	}
	js, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	c, err := v1alpha1.Decode(js)
	var strict *v1alpha1.StrictError
	if err != nil && !errors.As(err, &strict) {
		return nil, err
	}
	if errs := validate(c); len(errs) > 0 {
		problems = append(problems, fmt.Errorf("merged NodeConfig (%d sources): %w", len(sources), errs.ToAggregate()))
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return c, nil
}
