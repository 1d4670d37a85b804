package bake

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/internal/node/layout"
)

// Manifest is the image's bill of materials: every package with its version, every binary berth put in (and the
// runtime's) with its sha256, the pre-cached images, and the output files.
type Manifest struct {
	Name              string            `json:"name"`
	Distro            string            `json:"distro"`
	KubernetesVersion string            `json:"kubernetesVersion"`
	Built             time.Time         `json:"built"`
	Sources           []string          `json:"sources"`
	Packages          map[string]string `json:"packages"`
	Binaries          map[string]string `json:"binaries"`
	Images            []string          `json:"images"`
	Outputs           map[string]Output `json:"outputs,omitempty"`
}

// Output is one produced file.
type Output struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// runtimeBinaries are hashed besides the payload's files, wherever the profile installs them.
var runtimeBinaries = []string{"/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2", "/usr/bin/ctr", "/usr/sbin/runc",
	"/usr/local/bin/containerd", "/usr/local/bin/containerd-shim-runc-v2", "/usr/local/bin/ctr", "/usr/local/sbin/runc"}

// WriteManifest records the packages (from dpkg's status file), binaries and images, and puts the manifest into
// the image as layout.ImageManifest.
func WriteManifest(ctx context.Context, s *Spec, st *State) error {
	m := Manifest{Name: s.Name, Distro: s.Profile.Name, KubernetesVersion: s.KubernetesVersion, Built: time.Now().UTC().Truncate(time.Second),
		Sources: s.Profile.WithMirror(s.Mirror), Images: st.Images, Binaries: map[string]string{}}
	var err error
	if m.Packages, err = dpkgPackages(filepath.Join(st.Root, "var/lib/dpkg/status")); err != nil {
		return err
	}
	paths := append([]string(nil), runtimeBinaries...)
	files := st.Payload.Files
	for _, pkg := range st.Payload.Packages {
		files = append(files[:len(files):len(files)], pkg.Files...)
	}
	for _, f := range files {
		if f.Source != "" {
			paths = append(paths, f.Path)
		}
	}
	cni, _ := filepath.Glob(filepath.Join(st.Root, s.Profile.CNIBinDir, "*"))
	for _, c := range cni {
		paths = append(paths, strings.TrimPrefix(c, st.Root))
	}
	for _, p := range paths {
		sum, _, err := sha256File(filepath.Join(st.Root, p))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		m.Binaries[p] = sum
	}
	st.Manifest = m
	data, _ := json.MarshalIndent(m, "", "  ")
	return atomicfile.Write(filepath.Join(st.Root, layout.ImageManifest), append(data, '\n'), 0o644)
}

func (m *Manifest) addOutputs(outs map[disk.Format]string) error {
	m.Outputs = map[string]Output{}
	for f, p := range outs {
		sum, size, err := sha256File(p)
		if err != nil {
			return err
		}
		m.Outputs[string(f)] = Output{File: filepath.Base(p), Size: size, SHA256: sum}
	}
	return nil
}

func manifestPath(s *Spec) string { return filepath.Join(s.OutputDir, s.Name+".manifest.json") }

func writeManifestFile(s *Spec, st *State) error {
	data, _ := json.MarshalIndent(st.Manifest, "", "  ")
	return atomicfile.Write(manifestPath(s), append(data, '\n'), 0o644)
}

// dpkgPackages reads installed packages and versions from a dpkg status file.
func dpkgPackages(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read package list: %w", err)
	}
	defer f.Close()
	pkgs := map[string]string{}
	var name, version, status string
	flush := func() {
		if name != "" && strings.HasSuffix(status, " installed") {
			pkgs[name] = version
		}
		name, version, status = "", "", ""
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			name = strings.TrimPrefix(line, "Package: ")
		case strings.HasPrefix(line, "Version: "):
			version = strings.TrimPrefix(line, "Version: ")
		case strings.HasPrefix(line, "Status: "):
			status = strings.TrimPrefix(line, "Status: ")
		}
	}
	flush()
	if len(pkgs) == 0 {
		return nil, fmt.Errorf("%s lists no installed package", path)
	}
	return pkgs, sc.Err()
}

func sha256File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		return "", 0, os.ErrNotExist
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
