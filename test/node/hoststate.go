package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"berth.dev/berth/internal/dev/proc"
	"berth.dev/berth/internal/node/atomicfile"
)

// hostState is what a node changes on the host besides the processes it starts: its cgroup tree (which also holds
// containerd's shims and the containers, none of them in the process registry), its bridge, its node IP on lo, and
// net.ipv4.ip_forward (the bridge plugin turns it on). It is recorded next to the process registry, so that when
// a test binary is killed, the next Start finds and undoes it.
type hostState struct {
	Dir            string `json:"dir"`
	Cgroup         string `json:"cgroup"`
	Bridge         string `json:"bridge"`
	NodeIP         string `json:"nodeIP,omitempty"`
	ForwardWas     string `json:"forwardWas"`
	OwnerPID       int    `json:"ownerPID"`
	OwnerStartTime uint64 `json:"ownerStartTime"`
}

func statePath(reg proc.Registry, cgroup string) string {
	return filepath.Join(reg.Dir, "nodes", cgroup+".json")
}

func (s hostState) record(reg proc.Registry) error {
	data, _ := json.Marshal(s)
	return atomicfile.Write(statePath(reg, s.Cgroup), data, 0o644)
}

// undo kills everything left in the cgroup tree and removes it, deletes the bridge and the node IP, and puts
// ip_forward back.
func (s hostState) undo() error {
	errs := []error{killCgroupTree(s.Cgroup)}
	if _, err := os.Stat("/sys/class/net/" + s.Bridge); err == nil {
		if out, err := exec.Command("ip", "link", "del", s.Bridge).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w: %s", s.Bridge, err, out))
		}
	}
	if s.NodeIP != "" {
		out, err := exec.Command("ip", "-o", "addr", "show", "dev", "lo").Output()
		if err == nil && strings.Contains(string(out), " "+s.NodeIP+"/32 ") {
			if out, err := exec.Command("ip", "addr", "del", s.NodeIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("remove node IP %s from lo: %w: %s", s.NodeIP, err, out))
			}
		}
	}
	if s.ForwardWas != "" {
		errs = append(errs, os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(s.ForwardWas), 0o644))
	}
	return errors.Join(errs...)
}

// sweepHostStates undoes the host changes of nodes whose owner has exited without stopping them.
func sweepHostStates(reg proc.Registry, log *slog.Logger) error {
	paths, _ := filepath.Glob(filepath.Join(reg.Dir, "nodes", "*.json"))
	var errs []error
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var s hostState
		if err := json.Unmarshal(data, &s); err != nil {
			log.Warn("removing unreadable node record", "path", p, "err", err)
			os.Remove(p)
			continue
		}
		if !(proc.Record{OwnerPID: s.OwnerPID, OwnerStartTime: s.OwnerStartTime}).Orphaned() {
			continue
		}
		log.Info("undoing host changes of a node whose owner is gone", "dir", s.Dir, "cgroup", s.Cgroup)
		if err := s.undo(); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", s.Dir, err))
			continue
		}
		os.Remove(p)
	}
	return errors.Join(errs...)
}
