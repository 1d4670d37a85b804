package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"berth.dev/berth/internal/dev/cloud"
	"berth.dev/berth/internal/dev/netns"
	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/atomicfile"
)

// forwardCmd runs `berth-dev cloud forward` (started by cloud up, detached, never by hand): listen on a loopback
// port, write its address to -addr-file, and splice every connection to -to inside the namespace at -netns.
func forwardCmd(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("berth-dev cloud forward", flag.ContinueOnError)
	nsName := fs.String("netns", "", "the namespace's name (required)")
	listen := fs.String("listen", "127.0.0.1:0", "loopback address to listen on")
	to := fs.String("to", "", "address inside the namespace (required)")
	addrFile := fs.String("addr-file", "", "file that receives the address listened on (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var errs []error
	for name, v := range map[string]string{"-netns": *nsName, "-to": *to, "-addr-file": *addrFile} {
		if v == "" {
			errs = append(errs, fmt.Errorf("forward: %s: required", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(*listen); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("forward: -listen %q: want a loopback address and port", *listen)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	if err := atomicfile.Write(*addrFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
		ln.Close()
		return err
	}
	return netns.NS{Name: *nsName}.Forward(ctx, ln, *to, log)
}

// publishAPIServer makes the cloud's apiserver reachable from this host's loopback, as kind and k3d do: a detached
// `berth-dev cloud forward` in the cloud's process group (cloud down stops it), and <dir>/kubeconfig, the admin
// kubeconfig with that loopback address as its server (the apiserver's certificate names 127.0.0.1). It returns
// the kubeconfig's path once a request through it answers.
func publishAPIServer(ctx context.Context, c *cloud.Cloud, reg proc.Registry) (string, error) {
	dir := c.Config().Dir
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	target, err := url.Parse(c.CP.Endpoint)
	if err != nil {
		return "", fmt.Errorf("control plane endpoint %q: %w", c.CP.Endpoint, err)
	}
	addrFile := filepath.Join(dir, "apiserver-forward.addr")
	if err := os.Remove(addrFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	p, err := reg.Start(proc.Spec{Name: "apiserver-forward", Group: dir, Path: self,
		Args: []string{"cloud", "forward", "-netns", c.NS.Name, "-to", target.Host, "-addr-file", addrFile},
		Log:  filepath.Join(dir, "apiserver-forward.log"), Detached: true})
	if err != nil {
		return "", fmt.Errorf("apiserver forward: %w", err)
	}
	var addr string
	for addr == "" {
		if data, err := os.ReadFile(addrFile); err == nil {
			addr = strings.TrimSpace(string(data))
			break
		}
		select {
		case <-p.Exited():
			return "", fmt.Errorf("apiserver forward exited (%v): %s", p.ExitErr(), proc.Tail(filepath.Join(dir, "apiserver-forward.log"), 10))
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	cfg, err := clientcmd.LoadFromFile(c.CP.KubeconfigPath())
	if err != nil {
		return "", err
	}
	for _, cl := range cfg.Clusters {
		cl.Server = "https://" + addr
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return "", err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return "", err
	}
	rc.Timeout = 10 * time.Second
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return "", err
	}
	if body, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil || string(body) != "ok" {
		return "", fmt.Errorf("the apiserver through %s: %q, %v", addr, body, err)
	}
	return path, nil
}

// kubectlCommand is how to run kubectl here: plain `kubectl` when the one on PATH is there, else the pinned one's
// path.
func kubectlCommand(pinned string) string {
	if p, err := exec.LookPath("kubectl"); err == nil {
		return filepath.Base(p)
	}
	return pinned
}
