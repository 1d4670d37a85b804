package proc

import (
	"errors"
	"path/filepath"
	"sync"
	"time"
)

// Group is the set of processes one owner starts (a control plane, a node). They share a group name in their
// records (the owner's state directory), run in that directory, and log to <Dir>/logs/<name>.log.
type Group struct {
	Registry Registry
	Dir      string // the owner's state directory, also the records' group
	Detached bool   // see Spec.Detached

	mu    sync.Mutex
	procs []*Process
}

// LogPath is the log file of the group's process name.
func (g *Group) LogPath(name string) string { return filepath.Join(g.Dir, "logs", name+".log") }

// Start starts a process of the group.
func (g *Group) Start(name, path string, args ...string) (*Process, error) {
	p, err := g.Registry.Start(Spec{Name: name, Group: g.Dir, Path: path, Args: args, Dir: g.Dir,
		Log: g.LogPath(name), Detached: g.Detached})
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return p, nil
}

// Get returns the started process called name, or nil.
func (g *Group) Get(name string) *Process {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Take removes every process from the group and returns them, for the owner to stop in its own order.
func (g *Group) Take() []*Process {
	g.mu.Lock()
	defer g.mu.Unlock()
	procs := g.procs
	g.procs = nil
	return procs
}

// StopAll stops procs in parallel (see Process.Stop) and waits for all of them.
func StopAll(procs []*Process, grace time.Duration) error {
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() { errs[i] = p.Stop(grace) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Remove drops p from the group (after the owner stopped it, e.g. to restart it under the same name).
func (g *Group) Remove(p *Process) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, q := range g.procs {
		if q == p {
			g.procs = append(g.procs[:i], g.procs[i+1:]...)
			return
		}
	}
}
