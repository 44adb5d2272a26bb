package measure

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
)

// maxTreeEntries bounds a tree walk; the appliance's root filesystem has a
// few hundred entries.
const maxTreeEntries = 200_000

// MaxTreeBytes bounds the bytes of regular files a tree walk hashes: the
// appliance's root holds tens of MiB, and a squashfs of a few KiB can
// claim a sparse file of terabytes, which would keep a Pi (no SHA
// instructions) hashing for hours before anything is refused. The same
// cap holds in image measure, update apply and measure-boot, so the
// prediction and the device agree.
const MaxTreeBytes = 1 << 30

// TreeDigest is the content digest of a directory tree: SHA-256 over one
// record per entry, in fs.WalkDir's lexical order, the root itself first.
// A record is, with cryptobyte's length prefixes:
//
//	u8 type ('d' directory, 'f' regular file, 'l' symlink)
//	u32 mode (permission bits plus setuid, setgid, sticky as 04000, 02000, 01000)
//	u16-prefixed slash-separated path relative to the root ("." for the root)
//	'f': the file's SHA-256; 'l': the u16-prefixed link target
//
// It covers names, layout, contents, permissions and link targets; it does
// not cover owners or times, which the image builder fixes (root, and
// SOURCE_DATE_EPOCH). Names must be valid UTF-8, and the regular files
// hold at most MaxTreeBytes in all. Device nodes, FIFOs and sockets are refused: the
// image has none. mode, if not nil, maps each mode first.
func TreeDigest(root fs.FS, mode ModeFunc) ([sha256.Size]byte, error) {
	return treeDigest(root, ".", mode)
}

// treeDigest is the tree digest of the directory dir in root, with paths
// relative to dir. It walks root rather than an fs.Sub of it, which would
// hide the Lstat and ReadLink that symlinks need.
func treeDigest(root fs.FS, dir string, mode ModeFunc) ([sha256.Size]byte, error) {
	h := sha256.New()
	n, total := 0, int64(0)
	err := fs.WalkDir(root, dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > maxTreeEntries {
			return fmt.Errorf("more than %d entries", maxTreeEntries)
		}
		if err := CheckName(name); err != nil {
			return err
		}
		info, err := fs.Lstat(root, name)
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			if total += info.Size(); info.Size() < 0 || total > MaxTreeBytes {
				return fmt.Errorf("/%s: the files up to here hold more than %d MiB, the most a root may hold: leave large files out of the root", name, MaxTreeBytes>>20)
			}
		}
		m := info.Mode()
		if mode != nil {
			m = mode(m)
		}
		rec, err := treeRecord(root, name, relative(dir, name), m)
		if err != nil {
			return fmt.Errorf("/%s: %w", name, err)
		}
		h.Write(rec)
		return nil
	})
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return [sha256.Size]byte(h.Sum(nil)), nil
}

// relative is name's path below dir, "." for dir itself.
func relative(dir, name string) string {
	switch {
	case name == dir:
		return "."
	case dir == ".":
		return name
	}
	return strings.TrimPrefix(name, dir+"/")
}

func treeRecord(root fs.FS, name, rel string, m fs.FileMode) ([]byte, error) {
	var b cryptobyte.Builder
	switch {
	case m.IsDir():
		b.AddUint8('d')
	case m.IsRegular():
		b.AddUint8('f')
	case m.Type() == fs.ModeSymlink:
		b.AddUint8('l')
	default:
		return nil, errors.New("not a directory, regular file or symlink")
	}
	b.AddUint32(unixMode(m))
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(rel)) })
	switch {
	case m.IsRegular():
		d, err := hashFile(root, name)
		if err != nil {
			return nil, err
		}
		b.AddBytes(d[:])
	case m.Type() == fs.ModeSymlink:
		target, err := fs.ReadLink(root, name)
		if err != nil {
			return nil, err
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(target)) })
	}
	return b.Bytes()
}

// unixMode is the permission word as stat(2) has it.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// CheckName refuses a path that is not valid UTF-8: io/fs paths are, so
// such a file could be neither measured nor predicted. The image builder
// runs it on every entry of the root.
func CheckName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("the file name %q is not valid UTF-8: rename the file or leave it out of the root", name)
	}
	return nil
}
