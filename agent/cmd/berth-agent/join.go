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

	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/config"
	agentdaemon "berth.dev/berth/agent/daemon"
	"berth.dev/berth/agent/join"
	"berth.dev/berth/agent/lb/lbstatus"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/systemdbus"
	"berth.dev/berth/internal/node/distro"
	"berth.dev/berth/internal/node/exitcode"
	"berth.dev/berth/internal/node/layout"
)

// defaultUserData is cloud-init's copy of the instance's user data.
const defaultUserData = "/var/lib/cloud/instance/user-data.txt"

// nodeFlags are the flags join and run share.
type nodeFlags struct {
	dropIns, userData, stateDir, profile *string
	timeout                              *time.Duration
}

func addNodeFlags(fs *flag.FlagSet) nodeFlags {
	return nodeFlags{
		dropIns:  fs.String("config-dir", layout.DropInDir, "NodeConfig drop-ins, merged in lexical order"),
		userData: fs.String("user-data", defaultUserData, "cloud-init user data holding an "+config.MediaType+" part (optional)"),
		stateDir: fs.String("state-dir", layout.StateDir, "status file, joined marker"),
		profile:  fs.String("profile", "", "distro profile (default: the image's, from "+layout.ProfileFile+", else matched from /etc/os-release)"),
		timeout:  fs.Duration("timeout", 15*time.Minute, "give up after this long (discovery retries until then)"),
	}
}

// node is what a join needs besides the NodeConfig: the profile, systemd over D-Bus, paths and logging.
type node struct {
	flags nodeFlags
	p     distro.Profile
	paths layout.Paths
	mgr   *systemdbus.Manager
	log   *slog.Logger
	kills *killPlan // test failpoint (killPlanEnv); nil on real nodes
}

func newNode(f nodeFlags, stderr io.Writer) *node {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	return &node{flags: f, paths: layout.Default(), log: log, kills: loadKillPlan(os.Getenv(killPlanEnv), log)}
}

func (n *node) beforePhase() func(string) {
	if n.kills == nil {
		return nil
	}
	return n.kills.beforePhase
}

// open resolves the distro profile and connects to systemd; the exit code says what failed.
func (n *node) open(ctx context.Context, stderr io.Writer) int {
	profile := *n.flags.profile
	var err error
	if profile == "" {
		if profile, err = distro.HostProfile("/"); err != nil {
			fmt.Fprintf(stderr, "berth-agent: %v (or pass -profile)\n", err)
			return exitInvalidConfig
		}
	}
	if n.p, err = distro.Get(profile); err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInvalidConfig
	}
	if n.mgr, err = systemdbus.Connect(ctx); err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitcode.Services
	}
	return exitOK
}

func (n *node) joined() bool { _, err := os.Stat(n.paths.Kubeconfig); return err == nil }

func (n *node) load() (*nodeconfig.Config, error) {
	c, err := loadSources(*n.flags.userData, *n.flags.dropIns, n.joined())
	if err != nil {
		return nil, err
	}
	return config.Internal(c, nodeDefaults())
}

// nodeDefaults are what this machine supplies where the NodeConfig is silent: its hostname as the node name.
func nodeDefaults() nodeconfig.Defaults {
	hostname, _ := os.Hostname()
	return nodeconfig.Defaults{Hostname: strings.ToLower(hostname)}
}

func (n *node) join(ctx context.Context, c *nodeconfig.Config, stdout io.Writer) error {
	st, err := join.Run(ctx, join.Config{
		NodeConfig: c, Profile: n.p, Paths: n.paths, StateDir: *n.flags.stateDir,
		DropInDir: *n.flags.dropIns, Services: n.mgr, Timeout: *n.flags.timeout, Log: n.log,
		Notify:      func(state string) error { _, err := daemon.SdNotify(false, state); return err },
		BeforePhase: n.beforePhase(),
	})
	if n.kills != nil {
		n.kills.at("(between applies)")
	}
	fmt.Fprint(stdout, st.Format())
	return err
}

// exitCode maps a run's error to the documented exit codes.
func exitCode(err error) int {
	var je *join.Error
	var ce *agentdaemon.ConfigError
	var pe *agentdaemon.PanicError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &pe):
		return exitInternal // a bug, restarted by systemd; never the invalid-configuration code
	case errors.As(err, &je):
		return je.Code
	case errors.As(err, &ce):
		return exitInvalidConfig
	}
	return exitInternal
}

// joinCmd loads the NodeConfig (user data part, then drop-ins), joins through systemd over D-Bus and prints the
// run's status. The exit code is the failed phase's (docs/exit-codes.md).
func joinCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addNodeFlags(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *f.timeout+time.Minute)
	defer cancel()
	n := newNode(f, stderr)
	// The config first: a bad one is reported without touching systemd.
	c, err := n.load()
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		return exitInvalidConfig
	}
	if code := n.open(ctx, stderr); code != exitOK {
		return code
	}
	defer n.mgr.Close()
	return exitCode(n.join(ctx, c, stdout))
}

// runCmd is daemon mode (the berth-agent.service unit): join, then watch the drop-ins and re-apply changes, with
// sd_notify READY/STATUS and the watchdog. SIGTERM ends it with 0.
func runCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("berth-agent run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f := addNodeFlags(fs)
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n := newNode(f, stderr)
	if code := n.open(ctx, stderr); code != exitOK {
		return code
	}
	defer n.mgr.Close()
	wd, _ := daemon.SdWatchdogEnabled(false)
	routes := &routeController{ctx: ctx, run: n.podRoutes}
	defer routes.stop()
	err := agentdaemon.Run(ctx, agentdaemon.Config{
		DropInDir: *f.dropIns, Load: n.load, Joined: n.joined, Applied: routes.follow,
		Apply: func(ctx context.Context, c *nodeconfig.Config) error {
			ctx, cancel := context.WithTimeout(ctx, *f.timeout+time.Minute)
			defer cancel()
			return n.join(ctx, c, stdout)
		},
		Notify:       func(state string) error { _, err := daemon.SdNotify(false, state); return err },
		Watchdog:     wd,
		ApplyTimeout: *f.timeout + 2*time.Minute,
		Log:          n.log,
	})
	if err != nil && ctx.Err() != nil {
		// SIGTERM (systemctl stop) during the first join: a requested stop, not a failure of the phase it
		// interrupted. The join resumes from its status at the next start.
		fmt.Fprintf(stderr, "berth-agent: stopped during the join (%v)\n", err)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: %v\n", err)
		var pe *agentdaemon.PanicError
		if errors.As(err, &pe) {
			fmt.Fprintf(stderr, "%s", pe.Stack) // a bug: the stack goes to the journal for the report
		}
	}
	return exitCode(err)
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
	stateDir := fs.String("state-dir", layout.StateDir, "state directory")
	lbFile := fs.String("lb-status-file", layout.LBHostStatus, "the LB host role's status file")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return exitUsage
	}
	lb, lbErr := lbstatus.Read(*lbFile)
	if lbErr == nil {
		fmt.Fprint(stdout, lb.Format())
	} else if !errors.Is(lbErr, os.ErrNotExist) {
		fmt.Fprintf(stderr, "berth-agent: LB host status: %v\n", lbErr)
	}
	st, err := join.ReadStatus(*stateDir)
	if errors.Is(err, os.ErrNotExist) && lb != nil { // an LB host, not a node
		if lb.Error != "" {
			return exitInternal
		}
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: no status: %v\n", err)
		return exitInternal
	}
	fmt.Fprint(stdout, st.Format())
	if st.Result == "joined" {
		return exitOK
	}
	if st.ExitCode == exitOK {
		return exitInternal // running, or stopped before it ended
	}
	if _, known := exitcode.Lookup(st.ExitCode); !known {
		// An exit status carries 0-255 only: 256 would read as success. A code the agent never uses is a
		// damaged status file.
		fmt.Fprintf(stderr, "berth-agent: the last run failed with exit code %d, which the agent does not use\n", st.ExitCode)
		return exitInternal
	}
	return st.ExitCode
}
