package imagefs

import (
	"errors"
	"io/fs"
	"path"

	"github.com/diskfs/go-diskfs/filesystem/squashfs"
)

// squash is a go-diskfs squashfs as measure walks it: with Lstat and
// ReadLink (fs.ReadLinkFS), which go-diskfs lacks and the measurement
// needs to see symlinks as symlinks, from the parent directory's entries.
type squash struct{ *squashfs.FileSystem }

func (s squash) entry(name string) (fs.DirEntry, error) {
	dir, base := path.Split(name)
	if dir == "" {
		dir = "."
	}
	entries, err := s.ReadDir(path.Clean(dir))
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Name() == base {
			return e, nil
		}
	}
	return nil, &fs.PathError{Op: "lstat", Path: name, Err: fs.ErrNotExist}
}

// Lstat describes name without following a symlink.
func (s squash) Lstat(name string) (fs.FileInfo, error) {
	if name == "." {
		return s.Stat(".")
	}
	e, err := s.entry(name)
	if err != nil {
		return nil, err
	}
	return e.Info()
}

// ReadLink returns the target of the symlink name.
func (s squash) ReadLink(name string) (string, error) {
	e, err := s.entry(name)
	if err != nil {
		return "", err
	}
	l, ok := e.(interface{ Readlink() (string, error) })
	if !ok || e.Type() != fs.ModeSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: errors.New("not a symlink")}
	}
	return l.Readlink()
}
