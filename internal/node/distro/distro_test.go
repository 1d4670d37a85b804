package distro

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/node/layout"
)

// The image's recorded profile wins; without one (the agent's package on an existing machine) os-release picks the
// profile; an unknown release or a bad recorded name is an error that says which file and what it held.
func TestHostProfile(t *testing.T) {
	write := func(root, path, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, path), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, profile, osRelease, want, wantErr string
	}{
		{name: "image", profile: "ubuntu-16.04\n", osRelease: "ID=debian\nVERSION_ID=\"12\"\n", want: "ubuntu-16.04"},
		{name: "debian", osRelease: "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n", want: "debian-12"},
		{name: "ubuntu", osRelease: "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\n", want: "ubuntu-22.04"},
		{name: "unknown", osRelease: "ID=fedora\nVERSION_ID=41\n", wantErr: "(ID=fedora VERSION_ID=41) matches no profile"},
		{name: "no os-release", wantErr: "etc/os-release"},
		{name: "bad image profile", profile: "debian-11\n", osRelease: "ID=debian\nVERSION_ID=12\n", wantErr: layout.ProfileFile},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			if c.profile != "" {
				write(root, layout.ProfileFile, c.profile)
			}
			if c.osRelease != "" {
				write(root, "etc/os-release", c.osRelease)
			}
			got, err := HostProfile(root)
			switch {
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("err = %v, want one mentioning %q", err, c.wantErr)
			case c.wantErr == "" && (err != nil || got != c.want):
				t.Errorf("HostProfile = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}
