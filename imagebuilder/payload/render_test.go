package payload

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/imagebuilder/disk"
	"berth.dev/berth/imagebuilder/distro"
	"berth.dev/berth/systemd"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// render is everything a profile decides, as text: what mmdebstrap is asked for, how the disk is made, and every
// file the payload installs (content for generated files, a marker for copied binaries and images).
func render(t *testing.T, p distro.Profile) string {
	dir := t.TempDir()
	bin := func(name string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	in := Inputs{KubeletPath: bin("kubelet"), KubeProxyPath: bin("kube-proxy"), AgentPath: bin("berth-agent"), Images: []string{bin("pause.oci.tar")}}
	if p.Runtime == distro.RuntimeStatic {
		in.RuntimeDir = filepath.Join(dir, "runtime")
		if err := os.MkdirAll(filepath.Join(in.RuntimeDir, "cni"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range StaticRuntime {
			bin(filepath.Join("runtime", f.From))
		}
		if _, err := Build(p, Inputs{KubeletPath: in.KubeletPath, KubeProxyPath: in.KubeProxyPath, AgentPath: in.AgentPath, Images: in.Images}); err == nil ||
			!strings.Contains(err.Error(), "runtime_dir: required") {
			t.Errorf("%s without runtime_dir: err = %v, want runtime_dir: required", p.Name, err)
		}
	}
	pl, err := Build(p, in)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "profile: %s (%s %s, %s)\nbuilt here: %v\n", p.Name, p.Vendor, p.Version, p.Suite, p.BuiltHere)
	fmt.Fprintf(&b, "sources:\n  %s\n", strings.Join(p.Sources, "\n  "))
	fmt.Fprintf(&b, "sources with mirror http://mirror.example/archive:\n  %s\n", strings.Join(p.WithMirror("http://mirror.example/archive"), "\n  "))
	fmt.Fprintf(&b, "packages: %s\n", strings.Join(p.AllPackages(), " "))
	fmt.Fprintf(&b, "runtime: %s, CNI in %s, cgroup v1 only: %v, systemd %d, network: %s\n", p.Runtime, p.CNIBinDir, p.CgroupV1, p.Systemd, p.Network)
	fmt.Fprintf(&b, "mkfs.ext4 -O %s\n", strings.Join(p.Ext4Features, ","))
	l := disk.Layout{SizeMiB: 4096, RootUUID: "00000000-0000-4000-8000-000000000000", Ext4Features: p.Ext4Features}
	fstab, grub := disk.BootFiles(l, "/boot/vmlinuz-VERSION", "/boot/initrd.img-VERSION")
	fmt.Fprintf(&b, "--- /etc/fstab\n%s--- /boot/grub/grub.cfg\n%s", fstab, grub)
	files := func(fs []File) {
		for _, f := range fs {
			switch {
			case f.Link != "":
				fmt.Fprintf(&b, "--- %s -> %s\n", f.Path, f.Link)
			case f.Source != "":
				fmt.Fprintf(&b, "--- %s %04o (copied from %s)\n", f.Path, f.Mode, filepath.Base(f.Source))
			default:
				fmt.Fprintf(&b, "--- %s %04o\n%s", f.Path, f.Mode, f.Data)
			}
		}
	}
	files(pl.Files)
	for _, pkg := range pl.Packages {
		fmt.Fprintf(&b, "=== package %s (Depends: %s), installed with dpkg\n", pkg.FileName(), strings.Join(pkg.Depends, ", "))
		files(pkg.Files)
		fmt.Fprintf(&b, "--- postinst\n%s--- prerm\n%s--- postrm\n%s=== end of package %s\n", pkg.PostInst, pkg.PreRm, pkg.PostRm, pkg.Name)
	}
	fmt.Fprintf(&b, "units: %s\n", strings.Join(pl.Units(), " "))
	// The payload installs into a tree exactly as listed.
	root := t.TempDir()
	for _, f := range pl.Files {
		if err := f.WriteUnder(root); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprintf(&b, "--- seal script\n%s", SealScript)
	return b.String()
}

// Every profile's rendering is pinned by a golden file; Ubuntu's archive is not reachable here, so these are how
// the Ubuntu profiles stay honest. Regenerate with: go test ./imagebuilder/payload -run Golden -update
func TestGoldenProfiles(t *testing.T) {
	for _, name := range distro.Names() {
		t.Run(name, func(t *testing.T) {
			p, _ := distro.Get(name)
			got := render(t, p)
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s renders differently from %s (run with -update if the change is intended)\n--- got:\n%s", name, golden, got)
			}
		})
	}
}

func TestUnitsWorkOnEveryProfilesSystemd(t *testing.T) {
	for _, name := range distro.Names() {
		p, _ := distro.Get(name)
		units := systemd.RuntimeUnits()
		for _, u := range systemd.Units() {
			data, err := systemd.Unit(u)
			if err != nil {
				t.Fatal(err)
			}
			units[u] = data
		}
		for u, data := range units {
			for _, problem := range systemd.TooNew(data, p.Systemd) {
				t.Errorf("%s %s; %s has %d", u, problem, name, p.Systemd)
			}
		}
	}
}
