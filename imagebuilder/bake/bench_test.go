package bake_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/imagebuilder/bake"
	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/imagebuilder/rootfs"
	"berth.dev/berth/test/nodeimage"
)

// BenchmarkBake measures the Debian 12 bake on this machine (run with -benchtime 1x; it uses the network for the
// cold cases):
//
//	mmdebstrap  a bare mmdebstrap of the image's package set into an empty cache (the floor for a cold bake)
//	cold        the whole bake without the boot check, rootfs cache empty
//	warm        the same with the rootfs cached
//	bootcheck   the boot check alone (qemu TCG boot to all checks reported), on the warm image
//
// and reports each output's apparent and allocated size (raw and fixed VHD are sparse), and the time and size of a
// compressed qcow2.
//
//	go test -run '^$' -bench Bake -benchtime 1x -timeout 30m ./imagebuilder/bake
func BenchmarkBake(b *testing.B) {
	in := nodeimage.Inputs(b) // built once: the timed loops bake only
	p, _ := distro.Get("debian-12")
	log := slog.New(slog.DiscardHandler)
	spec := func(cache string, boot bool) *bake.Spec {
		s := nodeimage.Spec(b, in)
		s.Formats = []disk.Format{disk.Raw, disk.QCOW2, disk.VHD}
		s.CacheDir, s.BootCheck, s.BootTimeout, s.Log = cache, boot, 10*time.Minute, log
		return s
	}
	ctx := context.Background()
	b.Run("mmdebstrap", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := rootfs.Cached(ctx, rootfs.Spec{Suite: p.Suite, Sources: p.Sources, Packages: p.AllPackages()}, b.TempDir(), log); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			if _, err := bake.RunAll(ctx, spec(b.TempDir(), false)); err != nil {
				b.Fatal(err)
			}
		}
	})
	shared := b.TempDir()
	if _, err := bake.RunAll(ctx, spec(shared, false)); err != nil { // fill the cache
		b.Fatal(err)
	}
	var last *bake.Spec
	var st *bake.State
	var err error
	b.Run("warm", func(b *testing.B) {
		for b.Loop() {
			last = spec(shared, false)
			if st, err = bake.RunAll(ctx, last); err != nil {
				b.Fatal(err)
			}
		}
		for f, path := range st.Outputs {
			fi, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(fi.Size())/(1<<20), string(f)+"-MiB")
			b.ReportMetric(float64(fileBlocks(path))/(1<<20), string(f)+"-alloc-MiB")
		}
	})
	b.Run("qcow2-compressed", func(b *testing.B) {
		out := filepath.Join(b.TempDir(), "node.qcow2")
		for b.Loop() {
			os.Remove(out)
			if err := disk.Convert(ctx, disk.Exec{}, st.Outputs[disk.Raw], out, disk.QCOW2, true); err != nil {
				b.Fatal(err)
			}
		}
		fi, _ := os.Stat(out)
		b.ReportMetric(float64(fi.Size())/(1<<20), "qcow2c-MiB")
	})
	b.Run("bootcheck", func(b *testing.B) {
		for b.Loop() {
			last.BootCheck = true
			if err := bake.BootCheck(ctx, last, st); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// fileBlocks is the allocated size of a (sparse) file.
func fileBlocks(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return 0
	}
	return st.Blocks * 512
}
