// Package durable writes files so that a power cut or kill -9 at any moment
// leaves either the old content or the new, never a mix, and so that what
// it reports written is on disk.
//
// It refuses to write over anything but a regular file: a tool that
// removes and recreates its output path would happily replace /dev/null
// or follow an attacker's symlink.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// WriteFile replaces path with data: a temporary file in the same
// directory is written, fsynced and renamed over path, then the directory
// is fsynced so the rename itself survives a crash.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	if err := checkReplaceable(path); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := writeSynced(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// CreateFile writes data to a new file at path and fails if anything
// exists there. It is for secrets: a private key is never written over
// another one, and is created with perm from the first byte (use 0600).
func CreateFile(path string, data []byte, perm fs.FileMode) error {
	if err := CreateFileInBatch(path, data, perm); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// existsError refuses a new file whose name is taken, saying so once:
// errors.Is still finds fs.ErrExist and errors.As the *fs.PathError,
// whose own text would repeat the sentence.
type existsError struct {
	path string
	err  error
}

func (e *existsError) Error() string { return e.path + " already exists; refusing to overwrite it" }
func (e *existsError) Unwrap() error { return e.err }

// CreateFileInBatch is CreateFile for one of many new files in a
// directory: the file is written and fsynced, and the caller fsyncs the
// directory once, after the last file (SyncDir), instead of once per file.
func CreateFileInBatch(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &existsError{path: path, err: err}
		}
		return err
	}
	if err := writeSynced(f, data, perm); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

func writeSynced(f *os.File, data []byte, perm fs.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// MkdirAll makes path and any missing parents, as os.MkdirAll does, and
// fsyncs the parent of each directory it makes: a file written durably in
// a new directory is lost at a power cut if the directory's own entry is.
func MkdirAll(path string, perm fs.FileMode) error {
	info, err := os.Stat(path)
	if err == nil {
		if !info.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", path)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(path)
	if parent != path {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(path, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// syncDir is SyncDir; tests watch it.
var syncDir = SyncDir

// SyncDir fsyncs a directory so that entries created or renamed in it
// survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkReplaceable refuses a path that exists and is not a regular file.
// CheckReplaceable reports whether WriteFile would accept path, so a
// command that works for a while before writing can refuse a bad output
// path first.
func CheckReplaceable(path string) error { return checkReplaceable(path) }

func checkReplaceable(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s exists and is not a regular file; refusing to replace it", path)
	}
	return nil
}

// IsTemp reports whether name is one of WriteFile's temporary files, which
// a crash before its rename leaves behind.
func IsTemp(name string) bool {
	base, ok := strings.CutPrefix(name, ".")
	if !ok {
		return false
	}
	i := strings.LastIndex(base, ".tmp")
	if i <= 0 {
		return false
	}
	digits := base[i+len(".tmp"):]
	return digits != "" && strings.Trim(digits, "0123456789") == ""
}

// WriteFileIn is WriteFile for name inside root: every step (the
// temporary file, the rename, the directory's fsync) goes through root,
// so a symbolic link cannot send the write outside it. The temporary
// file's name is one IsTemp matches; it is removed on any failure.
func WriteFileIn(root *os.Root, name string, data []byte, perm fs.FileMode) error {
	if info, err := root.Lstat(name); err == nil && !info.Mode().IsRegular() {
		return fmt.Errorf("%s exists and is not a regular file; refusing to replace it", name)
	}
	dir, base := filepath.Split(name)
	var tmp string
	var f *os.File
	for range 100 {
		tmp = filepath.Join(dir, fmt.Sprintf(".%s.tmp%d", base, rand.Uint32()))
		var err error
		f, err = root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	if f == nil {
		return fmt.Errorf("could not create a temporary file for %s", name)
	}
	defer root.Remove(tmp) // a no-op after the rename
	if err := writeSynced(f, data, perm); err != nil {
		return err
	}
	if err := root.Rename(tmp, name); err != nil {
		return err
	}
	return SyncDirIn(root, filepath.Clean(dir))
}

// SyncDirIn is SyncDir for a directory inside root.
func SyncDirIn(root *os.Root, dir string) error {
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
