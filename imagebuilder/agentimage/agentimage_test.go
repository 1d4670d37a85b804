package agentimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/node/layout"
)

// The image is named layout.AgentImage and its layer holds the given binary, executable, as /berth-agent, its
// entrypoint.
func TestTarballHoldsTheAgent(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "berth-agent")
	if err := os.WriteFile(bin, []byte("\x7fELF the agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := Tarball(bin)
	if err != nil {
		t.Fatal(err)
	}
	blobs := entries(t, tar.NewReader(bytes.NewReader(data)))
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	var config struct{ Config struct{ Entrypoint []string } }
	blob := func(digest string) []byte { return blobs["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")] }
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %+v", err, index)
	}
	if n := index.Manifests[0].Annotations["io.containerd.image.name"]; n != layout.AgentImage {
		t.Errorf("image name %q, want %q", n, layout.AgentImage)
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v %+v", err, manifest)
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil || strings.Join(config.Config.Entrypoint, " ") != "/berth-agent" {
		t.Errorf("config: %v, entrypoint %q", err, config.Config.Entrypoint)
	}
	gz, err := gzip.NewReader(bytes.NewReader(blob(manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no berth-agent in the layer: %v", err)
		}
		if h.Name == "berth-agent" {
			got, _ := io.ReadAll(tr)
			if string(got) != "\x7fELF the agent" || h.Mode&0o111 == 0 {
				t.Errorf("berth-agent in the layer: %q, mode %o", got, h.Mode)
			}
			break
		}
	}
	if _, err := Tarball(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "agent image") {
		t.Errorf("a missing binary: %v", err)
	}
}

func entries(t *testing.T, tr *tar.Reader) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name], _ = io.ReadAll(tr)
	}
}
