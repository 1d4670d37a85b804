// Package checkpoint keeps, per sink, how far the sink has acknowledged each followed log: a small JSON file
// written atomically (temporary file, fsync, rename, directory fsync), so that a restart, even after a SIGKILL in
// the middle of a write, finds the last complete checkpoint. A checkpoint only ever holds positions a sink
// acknowledged: what was read but not delivered is read again.
package checkpoint

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"berth.dev/berth/agent/logship/tail"
	"berth.dev/berth/internal/node/atomicfile"
)

// Version is the format's version, written in every file and required on reading.
const Version = 1

// Positions are the positions per followed log (its path).
type Positions map[string]tail.Position

// Checkpoint is what one sink acknowledged: a position per container log, and the journal's cursor.
type Checkpoint struct {
	Positions Positions `json:"positions"`
	// JournalCursor is the cursor of the last journal entry the sink acknowledged ("": none yet).
	JournalCursor string `json:"journalCursor,omitempty"`
}

type file struct {
	Version int `json:"version"`
	Checkpoint
}

// Load reads the checkpoint at path; a missing file is an empty checkpoint (nothing delivered yet). Leftovers of an
// interrupted write beside it are removed.
func Load(path string) (Checkpoint, error) {
	c, err := load(path)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Positions == nil {
		c.Positions = Positions{}
	}
	return c, nil
}

func load(path string) (Checkpoint, error) {
	if _, err := atomicfile.Sweep(filepath.Dir(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Checkpoint{}, nil
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if dec.More() {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: more than one JSON document", path)
	}
	if f.Version != Version {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: version: %d, want %d", path, f.Version, Version)
	}
	for k, p := range f.Positions {
		if p.Offset < 0 {
			return Checkpoint{}, fmt.Errorf("checkpoint %s: positions[%q].offset: %d is negative", path, k, p.Offset)
		}
	}
	return f.Checkpoint, nil
}

// Save replaces the checkpoint at path with c, atomically (mode 0600).
func Save(path string, c Checkpoint) error {
	data, err := json.Marshal(file{Version: Version, Checkpoint: c})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}
