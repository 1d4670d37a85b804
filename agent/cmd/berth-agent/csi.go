package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sync/errgroup"

	"berth.dev/berth/agent/shares/mounter"
	"berth.dev/berth/agent/shares/mountopts"
	sharenode "berth.dev/berth/agent/shares/node"
	"berth.dev/berth/agent/shares/plugin"
	"berth.dev/berth/agent/systemdbus"
)

// csiCmd is the share drivers' node plugin: `berth-agent csi node` serves smb.shares.berth.dev and
// nfs.shares.berth.dev to the kubelet, each registered through the kubelet's plugins_registry.
func csiCmd(args []string, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "node" {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	fs := flag.NewFlagSet("berth-agent csi node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hostname, _ := os.Hostname()
	nodeID := fs.String("node", hostname, "this node's name (the Node object's)")
	kubeletDir := fs.String("kubelet-dir", "/var/lib/kubelet", "the kubelet's root directory (its plugins and plugins_registry)")
	stateDir := fs.String("state-dir", "/var/lib/berth/shares", "where shares are mounted and what is staged is recorded")
	credDir := fs.String("cred-dir", "/run/berth/shares", "where SMB credential files live while a mount is made (tmpfs)")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	units, err := systemdbus.Connect(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent csi node: %v\n", err)
		return exitInternal
	}
	defer units.Close()
	mt := mounter.Mounter{Units: units, Journal: mounter.JournalCtl("")}
	g, ctx := errgroup.WithContext(ctx)
	for name, protocol := range map[string]mountopts.Protocol{plugin.SMB: mountopts.SMB, plugin.NFS: mountopts.NFS} {
		srv := sharenode.New(sharenode.Config{Protocol: protocol, NodeID: *nodeID, StateDir: filepath.Join(*stateDir, string(protocol)),
			CredDir: *credDir, Log: log.With("driver", name)}, mt, sharenode.KernelBinds{})
		cfg := plugin.Config{Name: name, Version: plugin.Version, Log: log.With("driver", name),
			Socket:             filepath.Join(*kubeletDir, "plugins", name, "csi.sock"),
			RegistrationSocket: filepath.Join(*kubeletDir, "plugins_registry", name+"-reg.sock")}
		g.Go(func() error { return plugin.Serve(ctx, cfg, srv) })
	}
	if err := g.Wait(); err != nil {
		fmt.Fprintf(stderr, "berth-agent csi node: %v\n", err)
		return exitInternal
	}
	return exitOK
}
