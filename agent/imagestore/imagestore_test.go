package imagestore

import (
	"archive/tar"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func tarball(t *testing.T, files map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for name, data := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(data))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// The names come from index.json's io.containerd.image.name annotations, the ones containerd's import uses;
// tarballs that are not OCI layouts, or name no image, are refused with the file named.
func TestNames(t *testing.T) {
	good := tarball(t, map[string]string{"oci-layout": `{"imageLayoutVersion":"1.0.0"}`,
		"./index.json": `{"manifests":[{"annotations":{"io.containerd.image.name":"berth.dev/pause:3.10","org.opencontainers.image.ref.name":"3.10"}},{"annotations":{"io.containerd.image.name":"berth.dev/pause:latest"}}]}`})
	if got, err := Names(good); err != nil || !slices.Equal(got, []string{"berth.dev/pause:3.10", "berth.dev/pause:latest"}) {
		t.Errorf("Names = %v, %v", got, err)
	}
	for what, files := range map[string]map[string]string{
		"no index.json":  {"oci-layout": "{}"},
		"names no image": {"index.json": `{"manifests":[{"annotations":{"org.opencontainers.image.ref.name":"3.10"}}]}`},
		"broken index":   {"index.json": `{"manifests":`},
	} {
		p := tarball(t, files)
		if _, err := Names(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want an error naming %s", what, err, p)
		}
	}
}
