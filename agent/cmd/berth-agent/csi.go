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
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	"berth.dev/berth/agent/leader"
	sharecontroller "berth.dev/berth/agent/shares/controller"
	"berth.dev/berth/agent/shares/health"
	"berth.dev/berth/agent/shares/mounter"
	"berth.dev/berth/agent/shares/mountopts"
	sharenode "berth.dev/berth/agent/shares/node"
	"berth.dev/berth/agent/shares/plugin"
	"berth.dev/berth/agent/shares/provisioner"
	"berth.dev/berth/agent/shares/secretwatch"
	"berth.dev/berth/agent/shares/sharedirs"
	"berth.dev/berth/agent/shares/sharemetrics"
	"berth.dev/berth/agent/systemdbus"
)

// csiCmd is the share drivers' node plugin: `berth-agent csi node` serves smb.shares.berth.dev and
// nfs.shares.berth.dev to the kubelet, each registered through the kubelet's plugins_registry.
func csiCmd(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "node":
		return csiNodeCmd(args[1:], stderr)
	case "controller":
		return csiControllerCmd(args[1:], stderr)
	}
	fmt.Fprint(stderr, usage)
	return exitUsage
}

// csiControllerCmd is the share drivers' provisioner (deploy/shares.yaml's Deployment runs it): leader-elected, it
// makes a PersistentVolume, and a directory on the share, for each claim of their StorageClasses and deletes
// them after, with each driver's Controller service in process. It runs until SIGTERM (exit 0) or until it loses
// its lease (exit 1: its Deployment starts it again, a candidate).
func csiControllerCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent csi controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the control plane (default: in-cluster)")
	identity := fs.String("identity", "", "this candidate's identity in the leader election (default: hostname_random)")
	leaseNS := fs.String("lease-namespace", "kube-system", "namespace of the Lease berth-shares-provisioner")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	cs, err := kubeClient(*kubeconfig)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent csi controller: %v\n", err)
		return exitInvalidConfig
	}
	if *identity == "" {
		*identity = candidateIdentity()
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	klog.SetSlogLogger(log) // the library's and client-go's global klog lines too
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var drivers []provisioner.Driver
	for name, protocol := range map[string]mountopts.Protocol{plugin.SMB: mountopts.SMB, plugin.NFS: mountopts.NFS} {
		drivers = append(drivers, provisioner.Driver{Name: name, Controller: sharecontroller.New(protocol, sharedirs.Kernel{})})
	}
	err = provisioner.Run(ctx, provisioner.Config{Client: cs, Drivers: drivers, Log: log,
		Election: leader.Election{Namespace: *leaseNS, Name: provisioner.LeaseName, Identity: *identity}})
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent csi controller: %v\n", err)
		return exitInternal
	}
	return exitOK
}

// csiNodeCmd is the share drivers' node plugin (berth-csi.service).
func csiNodeCmd(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent csi node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hostname, _ := os.Hostname()
	nodeID := fs.String("node", hostname, "this node's name (the Node object's)")
	kubeletDir := fs.String("kubelet-dir", "/var/lib/kubelet", "the kubelet's root directory (its plugins and plugins_registry)")
	stateDir := fs.String("state-dir", "/var/lib/berth/shares", "where shares are mounted and what is staged is recorded")
	credDir := fs.String("cred-dir", "/run/berth/shares", "where SMB credential files live while a mount is made (tmpfs)")
	metricsAddr := fs.String("metrics-address", "127.0.0.1:9472", "where /metrics is served (Prometheus); \"\" for nowhere")
	kubeconfig := fs.String("kubeconfig", "/var/lib/kubelet/kubeconfig", "the kubelet's kubeconfig: with it the SMB driver finds and watches the Secrets of staged volumes, and re-stages them when one changes (waited for until the node has joined)")
	probeEvery := fs.Duration("probe-interval", 5*time.Second, "how often each mounted share is probed (a stat under a deadline of the same length); a dead or hung one is mounted again")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
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
	reg := metricsRegistry()
	metrics := sharemetrics.New(reg)
	stopMetrics, err := serveMetrics(*metricsAddr, reg)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent csi node: -metrics-address: %v\n", err)
		return exitUsage
	}
	defer stopMetrics()
	g, ctx := errgroup.WithContext(ctx)
	for name, protocol := range map[string]mountopts.Protocol{plugin.SMB: mountopts.SMB, plugin.NFS: mountopts.NFS} {
		srv := sharenode.New(sharenode.Config{Protocol: protocol, NodeID: *nodeID, StateDir: filepath.Join(*stateDir, string(protocol)),
			CredDir: *credDir, Log: log.With("driver", name)}, mt, sharenode.KernelBinds{})
		cfg := plugin.Config{Name: name, Version: plugin.Version, Log: log.With("driver", name),
			Socket:             filepath.Join(*kubeletDir, "plugins", name, "csi.sock"),
			RegistrationSocket: filepath.Join(*kubeletDir, "plugins_registry", name+"-reg.sock"),
			Controller:         sharecontroller.New(protocol, sharedirs.Kernel{})}
		g.Go(func() error { return plugin.Serve(ctx, cfg, srv) })
		g.Go(func() error {
			healShares(ctx, srv, metrics.Driver(name), *probeEvery, log.With("driver", name))
			return nil
		})
		if protocol == mountopts.SMB {
			g.Go(func() error {
				secretwatch.Run(ctx, secretwatch.Config{Client: secretwatch.KubeletClient(*kubeconfig, kubeClient), Driver: name, Volumes: srv, Log: log.With("driver", name)})
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		fmt.Fprintf(stderr, "berth-agent csi node: %v\n", err)
		return exitInternal
	}
	return exitOK
}

// healShares probes the driver's mounted shares every interval and mounts a dead or hung one again (with backoff
// after a failed remount: 5 s doubling up to 5 minutes), until ctx ends.
func healShares(ctx context.Context, srv *sharenode.Server, m *sharemetrics.Driver, every time.Duration, log *slog.Logger) {
	health.Run(ctx, health.Config{Interval: every, Timeout: every, MinBackoff: 5 * time.Second, MaxBackoff: 5 * time.Minute, Stat: health.Mounted(sharenode.KernelBinds{}.IsMounted, health.Statx), Log: log,
		Targets: func() []health.Target {
			ts, err := srv.Shares()
			if err != nil {
				log.Warn("listing the mounted shares", "err", err)
			}
			keys := make([]string, len(ts))
			for i, t := range ts {
				keys[i] = t.Key
			}
			m.Round(keys)
			return ts
		},
		Observe: func(t health.Target, r health.Result) { m.Probed(t.Key, r) },
		Heal: func(ctx context.Context, t health.Target, _ health.Result) error {
			err := srv.Heal(ctx, t.Key)
			m.Remounted(t.Key, err)
			return err
		}})
}
