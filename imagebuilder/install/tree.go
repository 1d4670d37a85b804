package install

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/payload"
	"berth.dev/berth/imagebuilder/precache"
)

// Tree is a system tree being baked, at Root: files are written under it, commands run in a chroot, images go into
// its own containerd store.
type Tree struct{ Root string }

// Put writes the file under the root (payload.File.WriteUnder: atomic, symlinks renamed into place).
func (t Tree) Put(_ context.Context, f payload.File) error { return f.WriteUnder(t.Root) }

// Shell runs the script with the tree's /bin/sh, chrooted.
func (t Tree) Shell(ctx context.Context, script string) error {
	if out, err := exec.CommandContext(ctx, "chroot", t.Root, "/bin/sh", "-c", script).CombinedOutput(); err != nil {
		return fmt.Errorf("in %s: %w: %s", t.Root, err, lastLines(string(out), 10))
	}
	return nil
}

// Activate does nothing: nothing runs in a tree; units, sysctls and modules take effect when the image boots.
func (Tree) Activate(context.Context, payload.Payload, distro.Profile) error { return nil }

// ImportImages imports the tarballs (paths in the tree) with a containerd rooted in the tree (precache).
func (t Tree) ImportImages(ctx context.Context, tarballs []string) ([]string, error) {
	var local []string
	for _, p := range tarballs {
		local = append(local, filepath.Join(t.Root, p))
	}
	return precache.Import(ctx, t.Root, local)
}
