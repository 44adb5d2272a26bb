package builder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/imagefs"
)

// buildRoot writes the read-only root filesystem as a standalone
// squashfs and returns its bytes, padded to 4 KiB as mksquashfs does.
func buildRoot(m *image.Manifest, rootDir, work string) ([]byte, error) {
	tree := os.DirFS(rootDir)
	limit, err := treeBound(tree)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(work, "root.squashfs")
	d, err := diskfs.Create(file, limit, sector)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	// go-diskfs would pass the 512-byte sector size as the squashfs block
	// size; create it directly with the usual 128 KiB.
	sq, err := squashfs.Create(d.Backend, limit, 0, imagefs.SquashBlock)
	if err != nil {
		return nil, err
	}
	// Finalize forgets the workspace without removing it, so Close would not.
	ws := sq.Workspace()
	defer os.RemoveAll(ws)
	links, err := newLinkShadow(work)
	if err != nil {
		return nil, err
	}
	// The workspace lies in TMPDIR: a default ACL there would be
	// inherited by everything staged.
	if err := stripXattrs(ws); err != nil {
		return nil, err
	}
	if err := stage(tree, ws, links, m.Epoch()); err != nil {
		return nil, err
	}
	if err := stripTree(ws); err != nil {
		return nil, err
	}
	if err := finalize(sq, links.dir, m.RootFS.Compression); err != nil {
		return nil, err
	}
	used, err := fixSuperblock(d.Backend, 0, limit, m.SourceDateEpoch)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return data[:(used+4095)/4096*4096], nil
}

// treeBound is an upper bound of the squashfs size of a tree: its bytes
// stored, plus a block of metadata per entry and some slack.
func treeBound(src fs.FS) (int64, error) {
	n := int64(4 * mib)
	err := fs.WalkDir(src, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += info.Size() + 4096
		return nil
	})
	return (n + mib - 1) / mib * mib, err
}

// finalize writes the squashfs with root-owned entries. go-diskfs reads
// symlink targets (os.Readlink) with paths relative to the workspace but
// resolves them against the working directory, so it runs from the link
// shadow, which holds the real links (see linkShadow).
func finalize(sq *squashfs.FileSystem, shadow, compression string) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	if err := os.Chdir(shadow); err != nil {
		return err
	}
	defer os.Chdir(wd)
	root := uint32(0)
	// Level 0 stores the blocks as they are: compression "none".
	level := uint32(9)
	if compression == image.CompressionNone {
		level = 0
	}
	return sq.Finalize(squashfs.FinalizeOptions{Compression: &squashfs.CompressorGzip{CompressionLevel: level}, FileUID: &root, FileGID: &root})
}

// fixSuperblock works around two go-diskfs gaps: it stamps mkfs_time (u32
// at +8) with the current time, and it writes a file system larger than
// its partition past the partition's end without an error, so the
// bytes_used field (u64 at +40) is checked here.
func fixSuperblock(b backend.Storage, start, size, epoch int64) (int64, error) {
	f, err := b.Writable()
	if err != nil {
		return 0, err
	}
	var sb [48]byte
	if _, err := f.ReadAt(sb[:], start); err != nil {
		return 0, err
	}
	used := binary.LittleEndian.Uint64(sb[40:])
	if used > uint64(size) {
		return 0, fmt.Errorf("the root filesystem needs %d bytes but only %d were set aside for it", used, size)
	}
	binary.LittleEndian.PutUint32(sb[8:], uint32(epoch))
	_, err = f.WriteAt(sb[8:12], start+8)
	return int64(used), err
}

// linkShadow works around go-diskfs v1.9.4 reading a symlink's extended
// attributes through the link (listxattr on the workspace path, which
// follows it): a dangling link fails the build, and a link to a build-host
// file carries that file's attributes into the image (and go-diskfs then
// panics writing them). So each symlink is staged twice: in the workspace,
// which go-diskfs walks and lists attributes on, as a link to placeholder
// (an empty file of the build's own, with no attributes); and at the same
// path under dir, the working directory of finalize, with its real
// target, which go-diskfs reads with os.Readlink relative to the working
// directory and writes into the image.
type linkShadow struct {
	dir, placeholder string
}

func newLinkShadow(work string) (linkShadow, error) {
	l := linkShadow{dir: filepath.Join(work, "links"), placeholder: filepath.Join(work, "link-placeholder")}
	if err := os.Mkdir(l.dir, 0o755); err != nil {
		return l, err
	}
	if err := os.WriteFile(l.placeholder, nil, 0o644); err != nil {
		return l, err
	}
	return l, stripXattrs(l.placeholder)
}

// add stages the symlink name (target) in the workspace ws and the shadow.
func (l linkShadow) add(ws, name, target string, t time.Time) error {
	real := filepath.Join(l.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(real), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(target, real); err != nil {
		return err
	}
	dst := filepath.Join(ws, filepath.FromSlash(name))
	if err := os.Symlink(l.placeholder, dst); err != nil {
		return err
	}
	tv := unix.NsecToTimeval(t.UnixNano())
	return unix.Lutimes(dst, []unix.Timeval{tv, tv})
}

// stripXattrs removes every extended attribute of path itself (not
// following a symlink): the image carries none of the build host's (ACLs
// inherited from TMPDIR, labels, user attributes).
func stripXattrs(path string) error {
	names, err := listXattrs(path)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := unix.Lremovexattr(path, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("the build host gives %s the extended attribute %s, which the build cannot remove (%v): build with TMPDIR on a file system without such attributes (a tmpfs, or ext4 without SELinux labels)", path, name, err)
		}
	}
	return nil
}

func listXattrs(path string) ([]string, error) {
	size, err := unix.Llistxattr(path, nil)
	if errors.Is(err, unix.ENOTSUP) || size == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the extended attributes of %s: %w", path, err)
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(path, buf); err != nil {
		return nil, fmt.Errorf("listing the extended attributes of %s: %w", path, err)
	}
	var names []string
	for _, n := range bytes.Split(buf[:size], []byte{0}) {
		if len(n) > 0 {
			names = append(names, string(n))
		}
	}
	return names, nil
}

// stripTree strips the extended attributes of every entry under dir.
func stripTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return stripXattrs(p)
	})
}

// stage copies the source tree into the squashfs workspace with normalised
// modes and fixed times (go-diskfs's own Chtimes and Symlink do nothing);
// symlinks go through links.
func stage(src fs.FS, ws string, links linkShadow, t time.Time) error {
	var dirs []string
	err := fs.WalkDir(src, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := measure.CheckName(name); err != nil {
			return err
		}
		info, err := fs.Lstat(src, name)
		if err != nil {
			return err
		}
		dst := filepath.Join(ws, filepath.FromSlash(name))
		mode := image.NormalMode(info.Mode())
		switch {
		case mode.IsDir():
			dirs = append(dirs, dst)
			return os.MkdirAll(dst, mode.Perm())
		case mode.Type() == fs.ModeSymlink:
			target, err := fs.ReadLink(src, name)
			if err != nil {
				return err
			}
			return links.add(ws, name, target, t)
		case info.Mode().IsRegular():
			return stageFile(src, name, dst, mode, t)
		}
		return fmt.Errorf("/%s: only directories, regular files and symlinks go into the image", name)
	})
	if err != nil {
		return err
	}
	// Directories last, deepest first: adding entries changes their times.
	for _, dir := range slices.Backward(dirs) {
		if err := os.Chmod(dir, 0o755); err != nil {
			return err
		}
		if err := os.Chtimes(dir, t, t); err != nil {
			return err
		}
	}
	return nil
}

func stageFile(src fs.FS, name, dst string, mode fs.FileMode, t time.Time) error {
	in, err := src.Open(name)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Chmod(mode.Perm()) // the umask trimmed the mode at creation
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Chtimes(dst, t, t)
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// rootTree is the directory the root filesystem is made from: rootfs.dir
// itself, or, when the manifest adds rootfs.files, a copy of it in work
// with those files added (none may replace an entry of rootfs.dir).
func rootTree(m *image.Manifest, sources map[string][]byte, work string) (string, error) {
	dir := m.Resolve(m.RootFS.Dir)
	if len(m.RootFS.Files) == 0 {
		return dir, nil
	}
	copyDir := filepath.Join(work, "root")
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		return "", fmt.Errorf("copying rootfs.dir: %w", err)
	}
	// The copy keeps rootfs.dir's symlinks (opt -> /srv/opt): writes go
	// through an os.Root, so a destination below a link that leads out
	// of the tree is refused instead of written on the build host.
	root, err := os.OpenRoot(copyDir)
	if err != nil {
		return "", err
	}
	defer root.Close()
	for _, f := range m.RootFS.Files {
		if err := addRootFile(root, f, sources[f.Src]); err != nil {
			return "", err
		}
	}
	return copyDir, nil
}

// addRootFile writes one rootfs.files entry inside root, refusing a
// destination that exists or whose path leaves the tree through a symlink.
func addRootFile(root *os.Root, f image.RootFile, data []byte) error {
	dst := filepath.FromSlash(f.Dst)
	if _, err := root.Lstat(dst); err == nil {
		return fmt.Errorf("rootfs file %s is already in rootfs.dir: remove one of them", f.Dst)
	}
	mode := os.FileMode(0o644)
	if f.Executable {
		mode = 0o755
	}
	err := root.MkdirAll(filepath.Dir(dst), 0o755)
	if err == nil {
		err = root.WriteFile(dst, data, mode)
	}
	if err == nil {
		err = root.Chmod(dst, mode) // the umask trimmed it
	}
	if err != nil {
		return fmt.Errorf("rootfs file %s: %w (a directory on its path may be a symlink of rootfs.dir that leads out of it: give a dst below a real directory)", f.Dst, err)
	}
	return nil
}
