// Command berth-agent joins a node to a hosted control plane and keeps it configured:
//
//	berth-agent config validate -f FILE   decode strictly and validate a NodeConfig; every problem on its own line
//	berth-agent preflight -f FILE         check DNS, TCP, TLS + CA pin, token and clock against the control plane
//	berth-agent join                      join this node (systemd over D-Bus), or re-apply a changed config
//	berth-agent run                       daemon mode (berth-agent.service): join, then re-apply drop-in changes
//	berth-agent status                    print the last join's phases with their durations
//
//	berth-agent lb validate -f FILE       decode strictly and validate a LoadBalancerConfig
//	berth-agent lb controller             the shared load balancer's controller: frontend IPs for LoadBalancer Services
//	berth-agent lb host                   an LB host: berth's nftables table, kept in line with the cluster
//
// Exit codes (docs/exit-codes.md): 0 success, 1 internal error, 10-14 preflight failure classes, 15 node name held
// by a Ready node, 16 timed out waiting (TLS bootstrap, podCIDR, Ready), 17 systemd job failed, 64 usage error, 78
// invalid configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"berth.dev/berth/agent/api/v1alpha1"
	"berth.dev/berth/agent/componentimage"
	"berth.dev/berth/agent/config"
	"berth.dev/berth/agent/configcheck"
	"berth.dev/berth/agent/nodeconfig"
	"berth.dev/berth/agent/preflight"
	"berth.dev/berth/internal/node/exitcode"
)

// Exit codes (internal/node/exitcode).
const (
	exitOK            = exitcode.OK
	exitInternal      = exitcode.Internal
	exitInvalidConfig = exitcode.InvalidConfig
	exitUsage         = exitcode.Usage
)

const usage = `usage: berth-agent config validate -f FILE
       berth-agent preflight -f FILE
       berth-agent join [-config-dir DIR] [-user-data FILE] [-state-dir DIR] [-profile NAME] [-timeout D]
       berth-agent run [-config-dir DIR] [-user-data FILE] [-state-dir DIR] [-profile NAME] [-timeout D]
       berth-agent status [-state-dir DIR]
       berth-agent lb validate -f FILE
       berth-agent lb controller -config FILE [-kubeconfig FILE] [-identity NAME]
       berth-agent lb host -config FILE [-kubeconfig FILE] [-interface NAME] [-identity NAME]
       berth-agent csi node [-node NAME] [-kubelet-dir DIR] [-state-dir DIR] [-cred-dir DIR] [-metrics-address ADDR]
                            [-probe-interval DURATION]
       berth-agent csi controller [-kubeconfig FILE] [-identity NAME] [-lease-namespace NS]
       berth-agent image -o FILE

  config validate   check a NodeConfig (node.berth.dev/v1alpha1): strict decoding, every problem with its field path
  preflight         check that this node can join: DNS, TCP, TLS and CA pin, bootstrap token, clock skew
  join              join the node: discovery, files, containerd and kubelet through systemd, TLS bootstrap, Ready;
                    on a joined node, re-apply the config and restart only what changed
  run               daemon mode (berth-agent.service): join as above, then watch -config-dir and re-apply
                    changes; sd_notify READY/STATUS and the systemd watchdog; with no NodeConfig yet, wait for one
  status            the last run, phase by phase
  lb validate       check a LoadBalancerConfig (lb.berth.dev/v1alpha1)
  lb controller     the shared load balancer's controller (leader-elected): a frontend IP per LoadBalancer Service
  lb host           an LB host: berth's nftables table sends each frontend's flows to a healthy node; with
                    -interface it announces (ARP) the frontend IPs it owns among the live LB hosts
  csi node          the share drivers' node plugin (smb.shares.berth.dev, nfs.shares.berth.dev): registered with
                    the kubelet through its plugins_registry; shares are systemd mount units, probed every
                    -probe-interval and mounted again when dead or hung; metrics on -metrics-address
  csi controller    the share drivers' provisioner (leader-elected; deploy/shares.yaml runs it): a volume, and a
                    directory on the share, for each claim of their StorageClasses, deleted or archived after
  image             write the agent's image (berth.dev/berth-agent, this very binary as /berth-agent) as an OCI
                    image-layout tarball, for the image builder's images list; prints its path
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) >= 2 && args[0] == "config" && args[1] == "validate":
		file, code := configcheck.FileFlag("berth-agent config validate", args[2:], stderr)
		if code != exitOK {
			return code
		}
		if _, code := load(file, stderr); code != exitOK {
			return code
		}
		fmt.Fprintf(stdout, "%s: valid\n", file)
		return exitOK
	case len(args) >= 1 && args[0] == "preflight":
		file, code := configcheck.FileFlag("berth-agent preflight", args[1:], stderr)
		if code != exitOK {
			return code
		}
		c, code := load(file, stderr)
		if code != exitOK {
			return code
		}
		return preflightCmd(c, stdout, stderr)
	case len(args) >= 1 && args[0] == "join":
		return joinCmd(args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "run":
		return runCmd(args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "status":
		return statusCmd(args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "lb":
		return lbCmd(args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "image":
		return componentimage.Agent.Cmd("berth-agent", args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "csi":
		return csiCmd(args[1:], stderr)
	default:
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
}

// load reads, decodes and validates a NodeConfig, printing every problem.
func load(file string, stderr io.Writer) (*nodeconfig.Config, int) {
	c, code := configcheck.Check(file, stderr, v1alpha1.Decode, (*v1alpha1.NodeConfig).Validate)
	if code != exitOK {
		return nil, code
	}
	nc, err := config.Internal(c, nodeDefaults())
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", file, err)
		return nil, exitInvalidConfig
	}
	return nc, exitOK
}

// preflightCmd runs the checks; a failure prints one line (check, cause, what to do) and exits with its class.
func preflightCmd(c *nodeconfig.Config, stdout, stderr io.Writer) int {
	tok, err := preflight.Token(c.ControlPlane.Discovery)
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: spec.controlPlane.discovery: %v\n", err)
		return exitInvalidConfig
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := preflight.Run(ctx, c.ControlPlane, tok, preflight.Options{})
	for _, p := range res.Passed {
		fmt.Fprintf(stdout, "preflight %-6s ok\n", p)
	}
	var pe *preflight.Error
	if errors.As(err, &pe) {
		fmt.Fprintf(stderr, "berth-agent: preflight %v\n", pe)
		return int(pe.Class)
	}
	if err != nil {
		fmt.Fprintf(stderr, "berth-agent: preflight: %v\n", err)
		return exitInternal
	}
	return exitOK
}
