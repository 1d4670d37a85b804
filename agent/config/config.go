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
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"berth.dev/berth/agent/api/v1alpha1"
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

// FromUserData returns the NodeConfig part of multipart user data, or nil when the user data has none (plain
// #cloud-config delivers the NodeConfig as a drop-in with write_files instead).
func FromUserData(userData []byte) ([]byte, error) {
	msg, err := mail.ReadMessage(bufio.NewReader(bytes.NewReader(userData)))
	if err != nil {
		return nil, nil // not a MIME document
	}
	mediaType, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || !strings.HasPrefix(mediaType, "multipart/") {
		return nil, nil
	}
	if params["boundary"] == "" {
		return nil, errors.New("user-data: multipart without a boundary")
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var found []byte
	for i := 1; ; i++ {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			return found, nil
		}
		if err != nil {
			return nil, fmt.Errorf("user-data: part %d: %w", i, err)
		}
		pt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if pt != MediaType {
			continue
		}
		if found != nil {
			return nil, fmt.Errorf("user-data: part %d: a second %s part (only one is allowed)", i, MediaType)
		}
		var r io.Reader = io.LimitReader(part, 1<<20)
		switch enc := strings.ToLower(part.Header.Get("Content-Transfer-Encoding")); enc {
		case "", "7bit", "8bit", "binary":
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, r)
		default:
			return nil, fmt.Errorf("user-data: part %d: unsupported Content-Transfer-Encoding %q", i, enc)
		}
		body, err := io.ReadAll(r)
		if err != nil {
			return nil, fmt.Errorf("user-data: part %d: %w", i, err)
		}
		if bytes.HasPrefix(body, []byte{0x1f, 0x8b}) {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				return nil, fmt.Errorf("user-data: part %d: gzip: %w", i, err)
			}
			if body, err = io.ReadAll(io.LimitReader(zr, 1<<20)); err != nil {
				return nil, fmt.Errorf("user-data: part %d: gzip: %w", i, err)
			}
		}
		found = body
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
		data, err := os.ReadFile(path)
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
	var merged map[string]any
	for _, s := range sources {
		if _, err := v1alpha1.Decode(s.Data); err != nil {
			return nil, fmt.Errorf("%s: %w", s.Name, err)
		}
		js, _ := yaml.YAMLToJSONStrict(s.Data) // Decode accepted it
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
	if err != nil {
		return nil, err
	}
	if errs := validate(c); len(errs) > 0 {
		return nil, fmt.Errorf("merged NodeConfig (%d sources): %w", len(sources), errs.ToAggregate())
	}
	return c, nil
}
