// Package deb writes a payload.Package as a .deb with nfpm: gzip-compressed (dpkg on Ubuntu 16.04 reads no
// zstd), owned by root, with a fixed timestamp so the same inputs give the same bytes.
package deb

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	nfpmdeb "github.com/goreleaser/nfpm/v2/deb"
	"github.com/goreleaser/nfpm/v2/files"

	"berth.dev/berth/imagebuilder/payload"
)

// MTime is every entry's timestamp (reproducible packages).
var MTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Write writes pkg to w. Files with Data and the scripts are staged in a temporary directory, since nfpm reads
// contents from paths.
func Write(w io.Writer, pkg payload.Package) error {
	if err := pkg.Validate(); err != nil {
		return err
	}
	stage, err := os.MkdirTemp("", "berth-deb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	staged := func(name string, data []byte) (string, error) {
		p := filepath.Join(stage, name)
		return p, os.WriteFile(p, data, 0o600)
	}
	info := &nfpm.Info{
		Name: pkg.Name, Arch: pkg.Arch, Platform: "linux", Version: pkg.Version, VersionSchema: "none",
		Section: "admin", Priority: "optional", Maintainer: "berth developers <berth@berth.dev>",
		Homepage: "https://github.com/berth-dev/berth", License: "Apache-2.0",
		Description: pkg.Description, MTime: MTime,
	}
	info.Depends = pkg.Depends
	info.Deb.Compression = "gzip"
	for i, f := range pkg.Files {
		src := f.Source
		if src == "" {
			if src, err = staged(fmt.Sprintf("file-%d", i), f.Data); err != nil {
				return err
			}
		}
		info.Contents = append(info.Contents, &files.Content{Source: src, Destination: f.Path, Type: files.TypeFile,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: f.Mode, MTime: MTime}})
	}
	for _, s := range []struct {
		name, body string
		dst        *string
	}{{"postinst", pkg.PostInst, &info.Scripts.PostInstall}, {"prerm", pkg.PreRm, &info.Scripts.PreRemove}, {"postrm", pkg.PostRm, &info.Scripts.PostRemove}} {
		if s.body == "" {
			continue
		}
		if *s.dst, err = staged(s.name, []byte(s.body)); err != nil {
			return err
		}
	}
	if err := nfpmdeb.Default.Package(nfpm.WithDefaults(info), w); err != nil {
		return fmt.Errorf("package %s: %w", pkg.Name, err)
	}
	return nil
}

// WriteFile writes pkg into dir under its conventional name, atomically (a temporary name, then a rename), and
// returns its path.
func WriteFile(dir string, pkg payload.Package) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, pkg.FileName())
	tmp, err := os.CreateTemp(dir, "."+strings.TrimSuffix(pkg.FileName(), ".deb")+"-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := Write(tmp, pkg); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp.Name(), dst)
}

// InstallInto installs pkg into the system tree at root with that tree's own dpkg (chroot), as the image builder
// does: the package is written under root's /var/tmp and removed after. No systemd runs in the chroot, so the
// maintainer scripts enable units but start nothing.
func InstallInto(ctx context.Context, root string, pkg payload.Package) error {
	path, err := WriteFile(filepath.Join(root, "var/tmp"), pkg)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	if out, err := exec.CommandContext(ctx, "chroot", root, "dpkg", "-i", "/var/tmp/"+filepath.Base(path)).CombinedOutput(); err != nil {
		return fmt.Errorf("install %s: dpkg -i: %w: %s", pkg.FileName(), err, out)
	}
	return nil
}
