package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where cgroup v1 hierarchies are mounted on this host.
const cgroupRoot = "/sys/fs/cgroup"

// hierarchies lists the mounted cgroup v1 hierarchies (cpu, memory, pids, ...), not the v2 "unified" mount.
func hierarchies() ([]string, error) {
	entries, err := os.ReadDir(cgroupRoot)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", cgroupRoot, err)
	}
	var hs []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "unified" {
			if _, err := os.Stat(filepath.Join(cgroupRoot, e.Name(), "cgroup.procs")); err == nil {
				hs = append(hs, e.Name())
			}
		}
	}
	return hs, nil
}

// createCgroups makes cgroup dirs (e.g. "berth-node-a" and "berth-node-a/pods") in every hierarchy. New cpuset
// cgroups inherit the parent's cpus and mems so processes can be placed in them.
func createCgroups(paths ...string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		for _, p := range paths {
			dir := filepath.Join(cgroupRoot, h, p)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("create cgroup %s: %w", dir, err)
			}
			if h == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					v, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
					if err != nil {
						return err
					}
					if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
						return fmt.Errorf("init %s/%s: %w", dir, f, err)
					}
				}
			}
		}
	}
	return nil
}

// joinCgroup moves pid into the pids hierarchy's cgroup p, so it and everything it forks (containerd's shims) can
// be found and killed at teardown.
func joinCgroup(p string, pid int) error {
	f := filepath.Join(cgroupRoot, "pids", p, "cgroup.procs")
	if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("move pid %d into %s: %w", pid, f, err)
	}
	return nil
}

// killCgroupTree SIGKILLs every process in the cgroup tree p of every hierarchy until none is left, then removes
// the cgroup dirs, deepest first.
func killCgroupTree(p string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	// The unified hierarchy too: the runtime makes the node's cgroups there as well (in hybrid mode), and they
	// were left behind, an empty tree per test node.
	var dirs []string
	for _, h := range append(hs, "unified") {
		root := filepath.Join(cgroupRoot, h, p)
		filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := 0
		for _, d := range dirs {
			data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
					syscall.Kill(pid, syscall.SIGKILL)
					n++
				}
			}
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: %d processes survive SIGKILL", p, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Deepest first: a cgroup dir can only be removed once its children are gone.
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	var errs []error
	for _, d := range dirs {
		var err error
		for range 50 { // a dying process can hold its cgroup for a moment
			if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}
