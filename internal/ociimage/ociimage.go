// Package ociimage writes single-layer container images as OCI image-layout tarballs, the format
// `ctr images import` and the containerd client accept. Nodes get their pre-cached images (pause, test
// workloads) this way: no registry is needed. Output is deterministic: the same files give the same digests.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"berth.dev/berth/internal/node/atomicfile"
)

// File is one entry of the image's only layer.
type File struct {
	Path string // absolute path inside the image, e.g. /bin/busybox
	Mode int64  // permission bits
	Data []byte // content of a regular file
	Link string // if set, the entry is a symlink to Link
}

// Image describes the image to write.
type Image struct {
	Name       string // full reference, e.g. berth.dev/pause:3.10
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
}

const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Write writes img to w as an OCI image-layout tarball and returns the manifest digest.
func Write(w io.Writer, img Image) (string, error) {
	if img.Name == "" || !strings.Contains(img.Name, ":") {
		return "", fmt.Errorf("image name %q: want a reference with a tag, e.g. example.org/app:1.0", img.Name)
	}
	layer, diffID, err := layerTarGz(img.Files)
	if err != nil {
		return "", err
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "Env": img.Env},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        desc(mediaConfig, config, nil),
		"layers":        []descriptor{desc(mediaLayer, layer, nil)},
	})
	tag := img.Name[strings.LastIndex(img.Name, ":")+1:]
	md := desc(mediaManifest, manifest, map[string]string{
		"io.containerd.image.name":          img.Name,
		"org.opencontainers.image.ref.name": tag,
	})
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mediaIndex, "manifests": []descriptor{md}})

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(config), config},
		{blobPath(layer), layer},
		{blobPath(manifest), manifest},
	}
	for _, e := range entries {
		if err := writeEntry(tw, &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}, e.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", fmt.Errorf("write image %s: %w", img.Name, err)
	}
	return md.Digest, nil
}

// WriteFile writes img to path atomically.
func WriteFile(path string, img Image) (string, error) {
	var buf bytes.Buffer
	digest, err := Write(&buf, img)
	if err != nil {
		return "", err
	}
	return digest, atomicfile.Write(path, buf.Bytes(), 0o644)
}

func desc(mediaType string, data []byte, ann map[string]string) descriptor {
	return descriptor{MediaType: mediaType, Digest: digestOf(data), Size: len(data), Annotations: ann}
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(data []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digestOf(data), "sha256:")
}

// layerTarGz builds the layer and returns it gzipped, with the digest of the uncompressed tar (its diff ID).
// Parent directories are added as needed; entries are sorted and carry no timestamps or owners.
func layerTarGz(files []File) ([]byte, string, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	seen := map[string]bool{}
	sorted := append([]File(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, f := range sorted {
		p := strings.TrimPrefix(path.Clean(f.Path), "/")
		if p == "" || p == "." || !path.IsAbs(f.Path) {
			return nil, "", fmt.Errorf("layer file %q: want an absolute path", f.Path)
		}
		if seen[p] {
			return nil, "", fmt.Errorf("layer file %q: listed twice", f.Path)
		}
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if seen[dir+"/"] {
				break
			}
			seen[dir+"/"] = true
		}
		seen[p] = true
	}
	var dirs []string
	for k := range seen {
		if strings.HasSuffix(k, "/") {
			dirs = append(dirs, k)
		}
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		if err := writeEntry(tw, &tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir}, nil); err != nil {
			return nil, "", err
		}
	}
	for _, f := range sorted {
		name := strings.TrimPrefix(path.Clean(f.Path), "/")
		h := &tar.Header{Name: name, Mode: f.Mode}
		if f.Link != "" {
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := writeEntry(tw, h, f.Data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	diffID := digestOf(raw.Bytes())
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), diffID, nil
}

func writeEntry(tw *tar.Writer, h *tar.Header, data []byte) error {
	h.ModTime = time.Unix(0, 0)
	h.Format = tar.FormatPAX
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("tar %s: %w", h.Name, err)
	}
	if len(data) > 0 {
		if _, err := tw.Write(data); err != nil {
			return fmt.Errorf("tar %s: %w", h.Name, err)
		}
	}
	return nil
}

// FromHostFile reads a host file into a layer File at dst.
func FromHostFile(src, dst string) (File, error) {
	st, err := os.Stat(src)
	if err != nil {
		return File{}, err
	}
	if !st.Mode().IsRegular() {
		return File{}, errors.New(src + ": not a regular file")
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return File{}, err
	}
	return File{Path: dst, Mode: int64(st.Mode().Perm()), Data: data}, nil
}
