package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/join"
	"berth.dev/berth/agent/render"
	"berth.dev/berth/agent/systemdbus"
	"berth.dev/berth/imagebuilder/distro"
)

const (
	defaultUserData = "/var/lib/cloud/instance/user-data.txt"
	defaultStateDir = "/var/lib/berth"
)

// joinCmd loads the NodeConfig (user data part, then drop-ins), joins through systemd over D-Bus and prints the
// run's status. The exit code is the failed phase's (docs/exit-codes.md).
func joinCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dropIns := fs.String("config-dir", config.DropInDir, "NodeConfig drop-ins, merged in lexical order")
	userData := fs.String("user-data", defaultUserData, "cloud-init user data holding an "+config.MediaType+" part (optional)")
	stateDir := fs.String("state-dir", defaultStateDir, "status file, joined marker")
	profile := fs.String("profile", "", "distro profile (default: the image's, from "+distro.ImageProfileFile+")")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long (discovery retries until then)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	paths := render.DefaultPaths()
	_, statErr := os.Stat(paths.Kubeconfig)
	c, err := loadSources(*userData, *dropIns, statErr == nil)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInvalidConfig
	}
	if *profile == "" {
		if *profile, err = distro.ImageProfile("/"); err != nil {
			fmt.Fprintf(stderr, "berth-agent: %v (or pass -profile)\n", err)
			return exitInvalidConfig
		}
	}
	p, err := distro.Get(*profile)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInvalidConfig
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+time.Minute)
	defer cancel()
	mgr, err := systemdbus.Connect(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return join.ExitServices
	}
	defer mgr.Close()
	hostname, _ := os.Hostname()
	st, err := join.Run(ctx, join.Config{
		NodeConfig: c, Profile: p, Paths: paths, NodeName: strings.ToLower(hostname), StateDir: *stateDir,
		DropInDir: *dropIns, Services: mgr, Timeout: *timeout, Log: log,
		Notify: func(state string) error { _, err := daemon.SdNotify(false, state); return err },
	})
	fmt.Fprint(stdout, st.Format())
	var je *join.Error
	if errors.As(err, &je) {
		return je.Code
	}
	if err != nil {
		return exitInternal
	}
	return exitOK
}

// loadSources merges the user data part (if the file has one) and the drop-ins.
func loadSources(userData, dropIns string, joined bool) (*v1alpha1.NodeConfig, error) {
	var sources []config.Source
	if data, err := os.ReadFile(userData); err == nil {
		part, err := config.FromUserData(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", userData, err)
		}
		if part != nil {
			sources = append(sources, config.Source{Name: userData, Data: part})
		}
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	drops, err := config.DropIns(dropIns)
	if err != nil {
		return nil, err
	}
	sources = append(sources, drops...)
	if joined {
		return config.MergeJoined(sources)
	}
	return config.Merge(sources)
}

// statusCmd prints the last run's status; the exit code is the run's (0 once joined).
func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", defaultStateDir, "state directory")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	st, err := join.ReadStatus(*stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: no status: %v\n", err)
		return exitInternal
	}
	fmt.Fprint(stdout, st.Format())
	switch {
	case st.Result == "joined":
		return exitOK
	case st.ExitCode != 0:
		return st.ExitCode
	}
	return exitInternal
}
