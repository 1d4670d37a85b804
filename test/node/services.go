package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/layout"
)

// The node is the agent's Services in the host tier: it runs containerd and the kubelet as processes in the node's
// mount namespace and cgroup, with the command lines the agent's drop-ins give them (read as systemd would). This
// is the one part that differs from production, where systemd runs the same units.

// Reload is a no-op: the drop-ins are read at every start.
func (n *Node) Reload(context.Context) error { return nil }

// Start starts a unit's process unless it runs.
func (n *Node) Start(ctx context.Context, unit string) error {
	if p := n.procs.Get(procName(unit)); p != nil {
		select {
		case <-p.Exited():
			n.procs.Remove(p)
		default:
			return nil
		}
	}
	switch unit {
	case layout.ContainerdUnit:
		p, err := n.enter(procName(unit), "containerd", "--config", n.Paths().ContainerdConfig)
		if err != nil {
			return err
		}
		return n.waitContainerd(ctx, p)
	case layout.KubeletUnit:
		args, err := dropInArgs(n.Paths().KubeletDropIn, "KUBELET_ARGS")
		if err != nil {
			return err
		}
		_, err = n.enter(procName(unit), filepath.Join(n.cfg.BinDir, "kubelet"), args...)
		return err
	case layout.KubeProxyUnit:
		// kube-proxy would program this host's iptables; the host tier leaves it out (the e2e tier runs it).
		n.log.Info("host tier: kube-proxy not run (it would program the host's iptables)")
		return nil
	}
	return fmt.Errorf("host tier: unknown unit %s", unit)
}

// Restart stops a unit's process (if it runs) and starts it again.
func (n *Node) Restart(ctx context.Context, unit string) error {
	if p := n.procs.Get(procName(unit)); p != nil {
		if err := p.Stop(10 * time.Second); err != nil {
			return err
		}
		n.procs.Remove(p)
		n.restarts[unit]++
	}
	return n.Start(ctx, unit)
}

// Restarts counts the restarts of a unit's running process (tests check that an unchanged re-run restarts nothing).
func (n *Node) Restarts(unit string) int { return n.restarts[unit] }

// Running reports whether a unit's process runs, and its pid.
func (n *Node) Running(unit string) (int, bool) {
	p := n.procs.Get(procName(unit))
	if p == nil {
		return 0, false
	}
	select {
	case <-p.Exited():
		return 0, false
	default:
		return p.PID, true
	}
}

// procName is a unit's process name (and log name): containerd, kubelet.
func procName(unit string) string { return strings.TrimSuffix(unit, ".service") }

// enter starts a process in the node's mount namespace and moves it into the node's cgroup before it forks
// anything (containerd's shims follow it there).
func (n *Node) enter(name, path string, args ...string) (*proc.Process, error) {
	p, err := n.procs.Start(name, "nsenter", append([]string{"--mount=/proc/" + strconv.Itoa(n.holder.PID) + "/ns/mnt", "--", path}, args...)...)
	if err != nil {
		return nil, err
	}
	return p, joinCgroup(n.host.Cgroup, p.PID)
}

// dropInArgs reads Environment="VAR=args" from a drop-in the way systemd does for $VAR in ExecStart: %% is a
// literal %, and the value splits on whitespace.
func dropInArgs(path, variable string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	prefix := `Environment="` + variable + `=`
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			v = strings.TrimSuffix(v, `"`)
			return strings.Fields(strings.ReplaceAll(v, "%%", "%")), nil
		}
	}
	return nil, fmt.Errorf("%s: no %s", path, prefix)
}
