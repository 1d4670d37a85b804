// Package nodeexporter runs node_exporter's collectors (github.com/prometheus/node_exporter/collector) inside berth:
// the node's CPU, memory, filesystems, disks and network, read from the host's /proc, /sys and / as mounted in the
// pod, under the metric names node_exporter's users know.
//
// node_exporter's collectors read their settings from flags they register on kingpin's global command line when
// the package is loaded. berth never lets that command line see its own arguments: New builds node_exporter's
// arguments from berth's config and parses them once per process; berth's CLI stays its own flag set.
package nodeexporter

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/node_exporter/collector"
)

// Config says where the host is and what to collect.
type Config struct {
	// Root is the host's / as mounted here (node_exporter's --path.rootfs); its proc and sys are read under it.
	// Empty: this system's own.
	Root string
	// Collectors are the node_exporter collectors to run, by name (cpu, meminfo, filesystem, …); empty: node_exporter's
	// default set.
	Collectors []string
	Log        *slog.Logger
}

// Args are node_exporter's command-line arguments for cfg.
func Args(cfg Config) []string {
	root := cfg.Root
	if root == "" {
		root = "/"
	}
	args := []string{"--path.rootfs=" + root, "--path.procfs=" + filepath.Join(root, "proc"), "--path.sysfs=" + filepath.Join(root, "sys"),
		"--path.udev.data=" + filepath.Join(root, "run/udev/data")}
	for _, c := range cfg.Collectors {
		args = append(args, "--collector."+c)
	}
	return args
}

// parsed is what kingpin's global command line was parsed with, once per process: node_exporter's own state,
// which New guards.
var parsed struct {
	sync.Mutex
	args []string
	err  error
}

var name = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// New is a collector of node_exporter's collectors for cfg. node_exporter's flags are parsed on the first call; a
// later call must ask for the same (a process has one node_exporter configuration).
func New(cfg Config) (prometheus.Collector, error) {
	for _, c := range cfg.Collectors {
		if !name.MatchString(c) {
			return nil, fmt.Errorf("node_exporter collector %q: not a collector name", c)
		}
	}
	args := Args(cfg)
	parsed.Lock()
	defer parsed.Unlock()
	if parsed.args == nil {
		parsed.args = args
		if _, err := kingpin.CommandLine.Parse(args); err != nil {
			if c, ok := strings.CutPrefix(err.Error(), "unknown long flag '--collector."); ok {
				parsed.err = fmt.Errorf("node_exporter collector %q: no such collector", strings.TrimSuffix(c, "'"))
			} else {
				parsed.err = fmt.Errorf("node_exporter: %w", err)
			}
		} else if len(cfg.Collectors) > 0 {
			// node_exporter's --collector.disable-defaults: only the collectors named on the command line run.
			collector.DisableDefaultCollectors()
		}
	} else if !slices.Equal(parsed.args, args) {
		return nil, fmt.Errorf("node_exporter is configured already in this process (%s), not again with %s",
			strings.Join(parsed.args, " "), strings.Join(args, " "))
	}
	if parsed.err != nil {
		return nil, parsed.err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc, err := collector.NewNodeCollector(log)
	if err != nil {
		return nil, fmt.Errorf("node_exporter: %w", err)
	}
	return nc, nil
}
