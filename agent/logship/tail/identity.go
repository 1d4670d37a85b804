// Package tail follows a container's log file as the kubelet and the runtime write and rotate it, and says for
// each line where reading starts again once the line is delivered. A file is known by its device, inode and first
// bytes (its Identity): a rename keeps all three, a copy keeps the first bytes, and a reused inode changes them.
package tail

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// HeadSize is how many of a file's first bytes its Identity keeps: more than a CRI record's time, stream and tag,
// so that two files' heads differ by their first line's time or content.
const HeadSize = 128

// Identity is a file's device and inode and its first bytes (fewer while the file is shorter).
type Identity struct {
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
	Head []byte `json:"head"`
}

// Same reports whether o is the file id names, later: the same inode, and still starting with id's first bytes
// (it may have grown, so that o knows more of them). A truncated or reused inode is not the same file.
func (id Identity) Same(o Identity) bool {
	return id.Dev == o.Dev && id.Ino == o.Ino && bytes.HasPrefix(o.Head, id.Head)
}

// Copy reports whether o holds id's content under another inode (a copy made for copytruncate): o starts with
// the bytes id knows, at least a CRI record's time, stream and tag (the time to the nanosecond tells files apart).
func (id Identity) Copy(o Identity) bool {
	return len(id.Head) >= minHead && bytes.HasPrefix(o.Head, id.Head) && (id.Dev != o.Dev || id.Ino != o.Ino)
}

// minHead is the shortest head Copy trusts: "2006-01-02T15:04:05.999999999Z stdout F ".
const minHead = 41

func (id Identity) String() string {
	return fmt.Sprintf("dev %d inode %d head %d bytes", id.Dev, id.Ino, len(id.Head))
}

// identify is f's Identity now, and its size (a gzipped file's: its content's, which never changes).
func identify(f logFile) (Identity, int64, error) {
	if g, ok := f.(*gzFile); ok {
		return g.id, g.size, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return Identity{}, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return Identity{}, 0, errors.New("no inode (not a Linux file)")
	}
	head := make([]byte, HeadSize)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return Identity{}, 0, err
	}
	return Identity{Dev: uint64(st.Dev), Ino: st.Ino, Head: head[:n]}, fi.Size(), nil
}
