// Package configfile reads the agent's config files without trusting them: only a regular file (or a symlink to
// one), opened without blocking (a FIFO is refused, not waited on), and at most MaxSize bytes (a larger one is
// refused, never cut short or read into memory whole).
package configfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// MaxSize bounds a config document: a NodeConfig, LoadBalancerConfig or LogShipperConfig is a few KiB.
const MaxSize = 1 << 20

// ErrNotAConfig is a file that cannot be a config whatever it holds: not a regular file, or too large.
var ErrNotAConfig = errors.New("not a config file")

// ReadBounded reads r whole, refusing more than MaxSize bytes.
func ReadBounded(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: larger than %d bytes (a config is a few KiB)", ErrNotAConfig, MaxSize)
	}
	return data, nil
}

// ReadFile reads the config file at path: a regular file (or a symlink to one) of at most MaxSize bytes.
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file (%s)", ErrNotAConfig, st.Mode().Type())
	}
	return ReadBounded(f)
}
