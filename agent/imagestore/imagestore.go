// Package imagestore checks the node's container runtime through containerd's Go client and makes sure it holds
// what a node without a registry needs: the image tarballs the image builder shipped (re-imported and unpacked
// when missing, e.g. after /var/lib/containerd was wiped), and the sandbox (pause) image pinned, so the kubelet's
// image garbage collection never removes it (CRI reports images labelled io.cri-containerd.pinned as pinned).
package imagestore

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
)

// Namespace is the kubelet's (CRI's) containerd namespace.
const Namespace = "k8s.io"

// PinnedLabel is the label containerd's CRI plugin reads as "pinned" for the kubelet.
const PinnedLabel = "io.cri-containerd.pinned"

// Config says where containerd is and what it must hold.
type Config struct {
	Socket       string // containerd's GRPC socket
	ImageDir     string // OCI image-layout tarballs (*.tar) shipped in the node image; missing dir: none
	SandboxImage string // pinned once present
	Snapshotter  string // default overlayfs (the CRI default)
	Log          *slog.Logger
}

// Result is what Ensure found and did.
type Result struct {
	Version  string   // containerd's version
	Present  []string // shipped images that were already there
	Imported []string // shipped images imported now
	Pinned   bool     // the sandbox image is pinned
}

func (r Result) String() string {
	s := fmt.Sprintf("containerd %s; %d shipped image(s) present, %d imported", r.Version, len(r.Present), len(r.Imported))
	if len(r.Imported) > 0 {
		s += " (" + strings.Join(r.Imported, ", ") + ")"
	}
	if r.Pinned {
		s += "; sandbox image pinned"
	}
	return s
}

// Ensure connects (retrying until ctx ends: containerd may still be starting), imports missing shipped images
// and pins the sandbox image. It is safe to run again: present images are not re-imported.
func Ensure(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = "overlayfs"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	var res Result
	c, v, err := connect(ctx, cfg.Socket)
	if err != nil {
		return res, err
	}
	defer c.Close()
	ctx = namespaced(ctx)
	res.Version = v

	tarballs, err := filepath.Glob(filepath.Join(cfg.ImageDir, "*.tar"))
	if err != nil {
		return res, err
	}
	sort.Strings(tarballs)
	for _, tb := range tarballs {
		names, err := Names(tb)
		if err != nil {
			return res, err
		}
		missing := false
		for _, n := range names {
			if _, err := c.ImageService().Get(ctx, n); errdefs.IsNotFound(err) {
				missing = true
			} else if err != nil {
				return res, fmt.Errorf("look up %s: %w", n, err)
			}
		}
		if !missing {
			res.Present = append(res.Present, names...)
			continue
		}
		imported, err := importTarball(ctx, c, tb, cfg.Snapshotter)
		if err != nil {
			return res, err
		}
		cfg.Log.Info("imported shipped image", "file", tb, "images", imported)
		res.Imported = append(res.Imported, imported...)
	}

	if cfg.SandboxImage != "" {
		img, err := c.ImageService().Get(ctx, cfg.SandboxImage)
		switch {
		case errdefs.IsNotFound(err):
			cfg.Log.Warn("sandbox image not present; the runtime will pull it for the first pod", "image", cfg.SandboxImage)
		case err != nil:
			return res, fmt.Errorf("look up sandbox image %s: %w", cfg.SandboxImage, err)
		default:
			if img.Labels[PinnedLabel] != "pinned" {
				if img.Labels == nil {
					img.Labels = map[string]string{}
				}
				img.Labels[PinnedLabel] = "pinned"
				if _, err := c.ImageService().Update(ctx, img, "labels."+PinnedLabel); err != nil {
					return res, fmt.Errorf("pin sandbox image %s: %w", cfg.SandboxImage, err)
				}
			}
			res.Pinned = true
		}
	}
	return res, nil
}

func namespaced(ctx context.Context) context.Context { return namespaces.WithNamespace(ctx, Namespace) }

// connect dials until containerd answers its version or ctx ends.
func connect(ctx context.Context, socket string) (*client.Client, string, error) {
	var last error
	for {
		c, err := client.New(socket, client.WithTimeout(5*time.Second), client.WithDefaultNamespace(Namespace))
		if err == nil {
			var v client.Version
			if v, err = c.Version(namespaced(ctx)); err == nil {
				return c, v.Version, nil
			}
			c.Close()
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("containerd at %s does not answer: %w", socket, last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func importTarball(ctx context.Context, c *client.Client, path, snapshotter string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	imgs, err := c.Import(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	var names []string
	for _, img := range imgs {
		if err := client.NewImage(c, img).Unpack(ctx, snapshotter); err != nil {
			return nil, fmt.Errorf("unpack %s from %s: %w", img.Name, path, err)
		}
		names = append(names, img.Name)
	}
	return names, nil
}

// Names reads the image names an OCI image-layout tarball carries (index.json's io.containerd.image.name
// annotations, which containerd's import uses), without importing it.
func Names(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no index.json (not an OCI image layout)", path)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if filepath.Clean(h.Name) != "index.json" {
			continue
		}
		var idx struct {
			Manifests []struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		if err := json.NewDecoder(tr).Decode(&idx); err != nil {
			return nil, fmt.Errorf("%s: index.json: %w", path, err)
		}
		var names []string
		for _, m := range idx.Manifests {
			if n := m.Annotations[images.AnnotationImageName]; n != "" {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("%s: index.json names no image (%s annotation)", path, images.AnnotationImageName)
		}
		return names, nil
	}
}
