// Package configwatch follows a config file that is replaced while a program runs, as the kubelet replaces a
// ConfigMap volume's files (it writes a new timestamped directory and swaps the `..data` symlink the file points
// through) or as an editor saves it (a rename over it, or a write in place). It watches the file's directory with
// fsnotify and hands over each new content, compared byte for byte with the last one: an event that changed
// nothing (a touch, the kubelet's own bookkeeping) is no change.
package configwatch

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"berth.dev/berth/agent/configfile"
)

// Config is what to watch.
type Config struct {
	// Path is the config file; Current is the content the program runs with (the first change is measured
	// against it).
	Path    string
	Current []byte
	// Settle is how long events must stop before the file is read (default 200 ms): a save is several events.
	Settle time.Duration
	// Changed is called with each new content; ReadFailed with a read that failed (a file gone for good, or
	// not a config file any more), the file then being watched on.
	Changed    func(data []byte)
	ReadFailed func(err error)
}

// Watch calls cfg.Changed for every new content of cfg.Path until ctx ends. It returns when ctx ends, or at once
// if the directory cannot be watched.
func Watch(ctx context.Context, cfg Config) error {
	if cfg.Settle <= 0 {
		cfg.Settle = 200 * time.Millisecond
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", cfg.Path, err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(cfg.Path)); err != nil {
		return fmt.Errorf("watch %s: %w", cfg.Path, err)
	}
	current := cfg.Current
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			settle = time.After(cfg.Settle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if cfg.ReadFailed != nil {
				cfg.ReadFailed(fmt.Errorf("watch %s: %w", cfg.Path, err))
			}
		case <-settle:
			settle = nil
			data, err := configfile.ReadFile(cfg.Path)
			if err != nil {
				if cfg.ReadFailed != nil {
					cfg.ReadFailed(err)
				}
				continue
			}
			if !bytes.Equal(data, current) {
				current = data
				cfg.Changed(data)
			}
		}
	}
}
