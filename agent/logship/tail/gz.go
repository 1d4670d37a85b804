package tail

import (
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// logFile is what a reader reads: a log file, or a rotated one the kubelet compressed.
type logFile interface {
	io.ReaderAt
	io.Closer
	Stat() (os.FileInfo, error)
}

// gzFile is a rotated log the kubelet gzipped (it compresses every rotated file but the newest, after the
// rotation after it), read as the content it holds: ReadAt decompresses (reads go forward, so it rarely starts
// again from the top), Stat's size is the content's (the gzip trailer's; under 4 GiB, as a container log is). Its
// identity is its own inode with the content's head, so it matches the file it was made of as a copy does
// (Identity.Copy): a position in that file is read on in it.
type gzFile struct {
	f    *os.File
	fi   os.FileInfo
	size int64
	id   Identity
	zr   *gzip.Reader
	pos  int64 // the content's offset zr is at
}

func openGz(f *os.File) (*gzFile, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, errors.New("no inode (not a Linux file)")
	}
	var trailer [4]byte
	if fi.Size() < 18 { // a gzip header and trailer
		return nil, fmt.Errorf("not a gzip file (%d bytes)", fi.Size())
	}
	if _, err := f.ReadAt(trailer[:], fi.Size()-4); err != nil {
		return nil, err
	}
	g := &gzFile{f: f, fi: fi, size: int64(binary.LittleEndian.Uint32(trailer[:]))}
	head := make([]byte, HeadSize)
	n, err := g.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	g.id = Identity{Dev: uint64(st.Dev), Ino: st.Ino, Head: head[:n]}
	return g, nil
}

func (g *gzFile) ReadAt(p []byte, off int64) (int, error) {
	if g.zr == nil || off < g.pos {
		zr, err := gzip.NewReader(io.NewSectionReader(g.f, 0, g.fi.Size()))
		if err != nil {
			return 0, err
		}
		g.zr, g.pos = zr, 0
	}
	if off > g.pos {
		n, err := io.CopyN(io.Discard, g.zr, off-g.pos)
		g.pos += n
		if err != nil {
			return 0, g.bad(err)
		}
	}
	total := 0
	for total < len(p) {
		n, err := g.zr.Read(p[total:])
		total += n
		g.pos += int64(n)
		if err != nil {
			return total, g.bad(err)
		}
	}
	return total, nil
}

// bad is err as ReadAt returns it: io.EOF at the end of the content, as os.File.ReadAt has it; anything else (the
// compressed data cut short or corrupt) is ErrCorrupt.
func (g *gzFile) bad(err error) error {
	if err == io.EOF {
		return io.EOF
	}
	return fmt.Errorf("%w: %s after %d bytes of content: %v", ErrCorrupt, g.f.Name(), g.pos, err)
}

// ErrCorrupt is a compressed rotated file that cannot be read to its end.
var ErrCorrupt = errors.New("corrupt compressed log")

func (g *gzFile) Close() error { return g.f.Close() }

func (g *gzFile) Stat() (os.FileInfo, error) { return contentInfo{g.fi, g.size}, nil }

// contentInfo is a gzipped file's FileInfo with its content's size.
type contentInfo struct {
	os.FileInfo
	size int64
}

func (c contentInfo) Size() int64 { return c.size }
