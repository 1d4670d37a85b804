// Package precache imports container images into a node image's own containerd store at bake time, so a node
// never needs a registry for its pause image and first pods. It runs a containerd whose root is the image's
// /var/lib/containerd, in a private mount namespace (unpacking layers mounts snapshots), with the CRI plugin off,
// and imports each OCI tarball into the k8s.io namespace the kubelet uses.
package precache

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Import imports the image tarballs into root's containerd store and returns the image names it holds.
func Import(ctx context.Context, root string, tarballs []string) ([]string, error) {
	tmp, err := os.MkdirTemp("", "berth-precache-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	sock := filepath.Join(tmp, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(root, "var/lib/containerd"), filepath.Join(tmp, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(tmp, "config.toml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(tmp, "containerd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "containerd", "--config", filepath.Join(tmp, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start containerd for image import: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("containerd for image import exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("containerd for image import did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctr := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	for _, t := range tarballs {
		if _, err := ctr("images", "import", t); err != nil {
			return nil, err
		}
	}
	out, err := ctr("images", "ls", "-q")
	if err != nil {
		return nil, err
	}
	return ImageNames(out), nil
}

// ImageNames reads `ctr images ls -q` output: the image names, without the bare digests it also lists.
func ImageNames(out string) []string {
	var names []string
	for _, l := range strings.Fields(out) {
		if !strings.HasPrefix(l, "sha256:") {
			names = append(names, l)
		}
	}
	return names
}
