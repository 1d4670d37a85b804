package payload

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth.dev/berth/test/images"
	"berth.dev/berth/test/toolbin"
)

// The static runtime the Ubuntu profiles install (their archives cannot be reached here, so this is where the
// binaries are proven): containerd v2 runs, imports an image with its ctr, and runs a container with the static
// runc through its shim. Every binary must also be statically linked, so glibc 2.23 (Ubuntu 16.04) runs it.
func TestStaticRuntimeRunsAContainer(t *testing.T) {
	dir := toolbin.Runtime.ForTest(t)
	for _, f := range StaticRuntime {
		out, err := exec.Command("file", "-L", filepath.Join(dir, f.From)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "statically linked") {
			t.Errorf("%s is not statically linked: %s", f.From, out)
		}
	}
	if out, _ := exec.Command(filepath.Join(dir, "containerd"), "--version").Output(); !strings.Contains(string(out), " v2.3.2 ") {
		t.Errorf("containerd --version = %q, want v2.3.2", out)
	}

	tmp := t.TempDir()
	imgs, err := images.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(tmp, "containerd.sock")
	cfg := `version = 3
root = "` + filepath.Join(tmp, "root") + `"
state = "` + filepath.Join(tmp, "state") + `"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = "` + sock + `"
[ttrpc]
  address = "` + sock + `.ttrpc"
`
	if err := os.WriteFile(filepath.Join(tmp, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	log, _ := os.Create(filepath.Join(tmp, "containerd.log"))
	defer log.Close()
	// The static shim must be found before any other on PATH.
	env := append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"))
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", filepath.Join(dir, "containerd"), "--config", filepath.Join(tmp, "config.toml"))
	cmd.Env, cmd.Stdout, cmd.Stderr = env, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			data, _ := os.ReadFile(log.Name())
			t.Logf("containerd log:\n%s", data)
		}
	})
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("static containerd did not start")
		}
		time.Sleep(25 * time.Millisecond)
	}
	ctr := func(args ...string) string {
		c := exec.Command(filepath.Join(dir, "ctr"), append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...)
		c.Env = env
		var stderr strings.Builder
		c.Stderr = &stderr
		out, err := c.Output() // stdout only: ctr warns about cgroup v1 on stderr
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	ctr("images", "import", imgs.Busybox)
	out := ctr("run", "--rm", "--runc-binary", filepath.Join(dir, "runc"), images.Busybox, "static-test", "echo", "hello from static runc")
	if strings.TrimSpace(out) != "hello from static runc" {
		t.Errorf("container printed %q", out)
	}
	// The shim that ran it is the static one.
	if data, _ := os.ReadFile(log.Name()); strings.Contains(string(data), "/usr/bin/containerd-shim") {
		t.Error("containerd used the host's shim, not the static one")
	}
}
