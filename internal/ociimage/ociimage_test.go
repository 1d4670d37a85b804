package ociimage

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func TestWriteIsDeterministicAndIndexed(t *testing.T) {
	img := Image{Name: "berth.dev/test:1", Entrypoint: []string{"/bin/app"}, Files: []File{
		{Path: "/bin/app", Mode: 0o755, Data: []byte("binary")},
		{Path: "/bin/sh", Link: "app"},
	}}
	var a, b bytes.Buffer
	da, err := Write(&a, img)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := Write(&b, img)
	if da != db || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same image differ")
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&a)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Digest != da ||
		index.Manifests[0].Annotations["io.containerd.image.name"] != "berth.dev/test:1" {
		t.Fatalf("index = %+v", index)
	}
	if _, ok := files["blobs/sha256/"+strings.TrimPrefix(da, "sha256:")]; !ok {
		t.Error("manifest blob missing")
	}
	if _, ok := files["oci-layout"]; !ok {
		t.Error("oci-layout missing")
	}
}

func TestWriteRejectsBadInput(t *testing.T) {
	for name, img := range map[string]Image{
		"no tag":        {Name: "berth.dev/test"},
		"relative path": {Name: "a:1", Files: []File{{Path: "bin/x"}}},
		"duplicate":     {Name: "a:1", Files: []File{{Path: "/x"}, {Path: "/x"}}},
	} {
		if _, err := Write(io.Discard, img); err == nil {
			t.Errorf("%s: Write succeeded, want an error", name)
		}
	}
}
