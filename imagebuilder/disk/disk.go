// Package disk assembles a bootable disk image offline from a root directory, with no loop devices and no mounts:
// an msdos partition table (sfdisk), an ext4 filesystem made from the directory (mkfs.ext4 -d) with a fixed UUID
// and the target's features, GRUB for BIOS (grub-mkimage + dd), fstab and grub.cfg by UUID. It then converts the
// raw disk to the other formats with qemu-img.
package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Runner runs external commands; tests substitute a recorder.
type Runner interface {
	Run(ctx context.Context, name string, args ...string) error
}

// Exec runs commands for real and puts their output in the error.
type Exec struct{}

func (Exec) Run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Layout describes the disk.
type Layout struct {
	SizeMiB      int      // whole disk, MiB (Azure needs whole MiB: the size is always a MiB multiple here)
	RootUUID     string   // the root filesystem's UUID (fixed, so the image is reproducible and fstab is stable)
	Ext4Features []string // mkfs.ext4 -O adjustments for the target
	KernelArgs   []string // extra kernel command line
}

// partitionStartMiB leaves room for GRUB's core image between the MBR and the first partition.
const partitionStartMiB = 1

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Validate returns every problem with the layout.
func (l Layout) Validate() error {
	var errs []error
	if l.SizeMiB < 512 {
		errs = append(errs, fmt.Errorf("disk_size_mib: %d is too small (at least 512)", l.SizeMiB))
	}
	if !uuidRE.MatchString(l.RootUUID) {
		errs = append(errs, fmt.Errorf("root_uuid: %q is not a lower-case UUID", l.RootUUID))
	}
	return errors.Join(errs...)
}

// Kernel finds the kernel and initrd under root/boot (the newest version, if several).
func Kernel(root string) (vmlinuz, initrd string, err error) {
	matches, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(matches) == 0 {
		return "", "", fmt.Errorf("no kernel in %s/boot", root)
	}
	sort.Strings(matches)
	vmlinuz = "/boot/" + filepath.Base(matches[len(matches)-1])
	version := strings.TrimPrefix(filepath.Base(vmlinuz), "vmlinuz-")
	initrd = "/boot/initrd.img-" + version
	if _, err := os.Stat(filepath.Join(root, initrd)); err != nil {
		return "", "", fmt.Errorf("initrd for kernel %s: %w", version, err)
	}
	return vmlinuz, initrd, nil
}

// BootFiles returns fstab and grub.cfg for the layout: root by UUID, serial console first (clouds and qemu log
// there), a zero timeout.
func BootFiles(l Layout, vmlinuz, initrd string) (fstab, grubCfg string) {
	fstab = fmt.Sprintf("UUID=%s / ext4 defaults,discard,errors=remount-ro 0 1\n", l.RootUUID)
	args := append([]string{"root=UUID=" + l.RootUUID, "ro", "console=tty0", "console=ttyS0,115200n8", "net.ifnames=0"}, l.KernelArgs...)
	grubCfg = fmt.Sprintf(`serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
menuentry "berth node" {
	search --no-floppy --fs-uuid --set=root %s
	linux %s %s
	initrd %s
}
`, l.RootUUID, vmlinuz, strings.Join(args, " "), initrd)
	return fstab, grubCfg
}

// Assemble writes fstab and grub.cfg into root, then builds the raw disk at out from root.
func Assemble(ctx context.Context, r Runner, root, out string, l Layout) error {
	if err := l.Validate(); err != nil {
		return err
	}
	vmlinuz, initrd, err := Kernel(root)
	if err != nil {
		return err
	}
	fstab, grubCfg := BootFiles(l, vmlinuz, initrd)
	if err := os.WriteFile(filepath.Join(root, "etc", "fstab"), []byte(fstab), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "boot", "grub"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "boot", "grub", "grub.cfg"), []byte(grubCfg), 0o644); err != nil {
		return err
	}

	work := out + ".parts"
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(work)
	part := filepath.Join(work, "root.ext4")
	core := filepath.Join(work, "core.img")
	partMiB := l.SizeMiB - partitionStartMiB
	os.Remove(out)
	mkfs := []string{"-q", "-F", "-t", "ext4", "-L", "root", "-U", l.RootUUID, "-d", root}
	if len(l.Ext4Features) > 0 {
		mkfs = append(mkfs, "-O", strings.Join(l.Ext4Features, ","))
	}
	// A fixed hash seed and no lazy init make the filesystem the same for the same input tree.
	mkfs = append(mkfs, "-E", "hash_seed="+l.RootUUID+",lazy_itable_init=0,lazy_journal_init=0", part, fmt.Sprintf("%dM", partMiB))
	steps := [][]string{
		append([]string{"mkfs.ext4"}, mkfs...),
		{"truncate", "-s", fmt.Sprintf("%dM", l.SizeMiB), out},
		{"sh", "-c", fmt.Sprintf("printf 'label: dos\\nstart=%d, type=83, bootable\\n' | sfdisk -q %q", partitionStartMiB*2048, out)},
		{"dd", "if=" + part, "of=" + out, "bs=1M", fmt.Sprintf("seek=%d", partitionStartMiB), "conv=notrunc,sparse", "status=none"},
		{"grub-mkimage", "-O", "i386-pc", "-o", core, "-p", "(hd0,msdos1)/boot/grub",
			"biosdisk", "part_msdos", "ext2", "normal", "linux", "search", "search_fs_uuid", "serial", "terminal", "configfile", "echo", "test", "gzio"},
		{"dd", "if=/usr/lib/grub/i386-pc/boot.img", "of=" + out, "bs=440", "count=1", "conv=notrunc", "status=none"},
		{"dd", "if=" + core, "of=" + out, "bs=512", "seek=1", "conv=notrunc", "status=none"},
	}
	for _, s := range steps {
		if err := r.Run(ctx, s[0], s[1:]...); err != nil {
			os.Remove(out)
			return fmt.Errorf("assemble disk: %w", err)
		}
	}
	return nil
}

// Format is an output format.
type Format string

const (
	Raw   Format = "raw"
	QCOW2 Format = "qcow2"
	VHD   Format = "vhd" // fixed VHD, as Azure requires
)

// Convert writes raw into format at out. qcow2 may be compressed.
func Convert(ctx context.Context, r Runner, raw, out string, f Format, compress bool) error {
	var args []string
	switch f {
	case QCOW2:
		args = []string{"convert", "-f", "raw", "-O", "qcow2"}
		if compress {
			args = append(args, "-c")
		}
	case VHD:
		args = []string{"convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on"}
	default:
		return fmt.Errorf("convert to %q: only qcow2 and vhd", f)
	}
	return r.Run(ctx, "qemu-img", append(args, raw, out)...)
}
