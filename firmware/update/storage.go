package update

import (
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/diskfs/go-diskfs/backend"
)

// storage is a go-diskfs backend over a disk given as an io.ReaderAt of a
// known size, writable when w is set: go-diskfs opens disks by path, and
// the update works on an open block device, a partition of one, or (in
// tests) a regular file.
type storage struct {
	*io.SectionReader
	w io.WriterAt
}

func newStorage(r io.ReaderAt, w io.WriterAt, size int64) storage {
	return storage{SectionReader: io.NewSectionReader(r, 0, size), w: w}
}

func (s storage) Stat() (fs.FileInfo, error) { return sizeInfo(s.Size()), nil }
func (s storage) Close() error               { return nil }
func (s storage) Sys() (*os.File, error)     { return nil, backend.ErrNotSuitable }
func (s storage) Path() string               { return "" }
func (s storage) WriteAt(p []byte, off int64) (int, error) {
	if s.w == nil || off < 0 || off+int64(len(p)) > s.Size() {
		return 0, backend.ErrIncorrectOpenMode
	}
	return s.w.WriteAt(p, off)
}

func (s storage) Writable() (backend.WritableFile, error) {
	if s.w == nil {
		return nil, backend.ErrIncorrectOpenMode
	}
	return s, nil
}

// sizeInfo is the fs.FileInfo of a disk: only its size means anything.
type sizeInfo int64

func (n sizeInfo) Name() string       { return "disk" }
func (n sizeInfo) Size() int64        { return int64(n) }
func (n sizeInfo) Mode() fs.FileMode  { return 0o600 }
func (n sizeInfo) ModTime() time.Time { return time.Time{} }
func (n sizeInfo) IsDir() bool        { return false }
func (n sizeInfo) Sys() any           { return nil }
