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

type file struct {
	Version   int       `json:"version"`
	Positions Positions `json:"positions"`
}

// Load reads the checkpoint at path; a missing file is an empty checkpoint (nothing delivered yet). Leftovers of an
// interrupted write beside it are removed.
func Load(path string) (Positions, error) {
	if _, err := atomicfile.Sweep(filepath.Dir(path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Positions{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("checkpoint %s: more than one JSON document", path)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("checkpoint %s: version: %d, want %d", path, f.Version, Version)
	}
	for k, p := range f.Positions {
		if p.Offset < 0 {
			return nil, fmt.Errorf("checkpoint %s: positions[%q].offset: %d is negative", path, k, p.Offset)
		}
	}
	if f.Positions == nil {
		f.Positions = Positions{}
	}
	return f.Positions, nil
}

// Save replaces the checkpoint at path with ps, atomically (mode 0600).
func Save(path string, ps Positions) error {
	data, err := json.Marshal(file{Version: Version, Positions: ps})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}
