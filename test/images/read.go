package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Image is an OCI image-layout tarball of one image read back: its name (containerd's annotation), its config's
// entrypoint, and the regular files of its layers with their modes.
type Image struct {
	Name       string
	Entrypoint []string
	Files      map[string]File
}

// File is a regular file of a layer.
type File struct {
	Data []byte
	Mode fs.FileMode
}

// Read reads the tarball at path, failing the test if it is not one image in the OCI layout.
func Read(tb testing.TB, path string) Image {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	blobs := map[string][]byte{}
	for tr := tar.NewReader(bytes.NewReader(data)); ; {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		blobs[h.Name], _ = io.ReadAll(tr)
	}
	blob := func(digest string) []byte { return blobs["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")] }
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
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		tb.Fatalf("%s: index.json: %v %s", path, err, blobs["index.json"])
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil {
		tb.Fatalf("%s: manifest: %v", path, err)
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil {
		tb.Fatalf("%s: config: %v", path, err)
	}
	img := Image{Name: index.Manifests[0].Annotations["io.containerd.image.name"], Entrypoint: config.Config.Entrypoint, Files: map[string]File{}}
	for _, l := range manifest.Layers {
		gz, err := gzip.NewReader(bytes.NewReader(blob(l.Digest)))
		if err != nil {
			tb.Fatalf("%s: layer %s: %v", path, l.Digest, err)
		}
		for tr := tar.NewReader(gz); ; {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				tb.Fatalf("%s: layer %s: %v", path, l.Digest, err)
			}
			if h.Typeflag == tar.TypeReg {
				b, _ := io.ReadAll(tr)
				img.Files[h.Name] = File{Data: b, Mode: fs.FileMode(h.Mode).Perm()}
			}
		}
	}
	return img
}

// CheckImageOfItself checks a component's `image -o FILE` command: run as bin, it writes the image of that very
// binary, named name, its layer's file byte for byte the binary; it prints the path; without -o it exits 64
// (usage).
func CheckImageOfItself(t *testing.T, bin, name, file string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "image.oci.tar")
	got, err := exec.Command(bin, "image", "-o", out).Output()
	if err != nil || strings.TrimSpace(string(got)) != out {
		t.Fatalf("image: %v, printed %q", err, got)
	}
	self, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	img := Read(t, out)
	if img.Name != name {
		t.Errorf("image %q, want %q", img.Name, name)
	}
	if f := img.Files[file]; !bytes.Equal(f.Data, self) {
		t.Errorf("the layer's %s (%d bytes) is not the binary that wrote it (%d bytes)", file, len(f.Data), len(self))
	}
	if err := exec.Command(bin, "image").Run(); err == nil {
		t.Error("image without -o succeeded")
	} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 64 {
		t.Errorf("image without -o: %v, want exit 64", err)
	}
}
