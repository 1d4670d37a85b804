package node

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"berth.dev/berth/test/tier"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/t\04`: `/t\04`} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// KernelBinds for real, in a mount namespace of its own (unshare): a bind, a read-only bind of it, both seen as
// mount points (also under a name with a space), unbinding twice.
func TestKernelBinds(t *testing.T) {
	tier.Require(t, tier.Root)
	// A private mount namespace for this test's thread only: the host's mounts are not touched.
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			// The goroutine's thread is locked and never returned to the pool (its namespace differs).
			runtime.LockOSThread()
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return err
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return err
			}
			dir := t.TempDir()
			src, stage, pod := filepath.Join(dir, "src"), filepath.Join(dir, "a stage"), filepath.Join(dir, "pod")
			for _, d := range []string{src, stage, pod} {
				os.Mkdir(d, 0o755)
			}
			b := KernelBinds{}
			ctx := context.Background()
			if err := b.Bind(ctx, src, stage, false); err != nil {
				return err
			}
			if err := b.Bind(ctx, stage, pod, true); err != nil {
				return err
			}
			for _, p := range []string{stage, pod} {
				if m, err := b.IsMounted(p); err != nil || !m {
					t.Errorf("%s mounted = %v %v", p, m, err)
				}
			}
			if m, _ := b.IsMounted(src); m {
				t.Errorf("%s is not a mount point", src)
			}
			if err := os.WriteFile(filepath.Join(stage, "f"), []byte("x"), 0o644); err != nil {
				t.Errorf("write through the read-write bind: %v", err)
			}
			if data, err := os.ReadFile(filepath.Join(src, "f")); err != nil || string(data) != "x" {
				t.Errorf("the bind does not show the source: %q %v", data, err)
			}
			if err := os.WriteFile(filepath.Join(pod, "g"), nil, 0o644); err == nil {
				t.Error("wrote through the read-only bind")
			}
			for range 2 {
				for _, p := range []string{pod, stage} {
					if err := b.Unbind(ctx, p); err != nil {
						t.Errorf("unbind %s: %v", p, err)
					}
				}
			}
			if m, _ := b.IsMounted(stage); m {
				t.Error("still mounted after Unbind")
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
