// Package imagefs reads the file systems of a built image with go-diskfs,
// on any io.ReaderAt: a file, a block device, a partition of one, or
// boot.img in memory. It holds the one reading of a built image's policy
// ([Predict]) that both `image measure --image` on the build host and
// `update apply` on the device run.
//
// The images it reads come from outside (an operator's file, a card):
// go-diskfs panics on some damaged file systems, so every read here runs
// under [Guard] and such an image is refused with "the file system is
// damaged". go-diskfs also follows a FAT cluster chain without a bound
// (a loop grows memory until the process dies, which no recover catches),
// so [OpenFAT] first walks every chain of the first FAT once and refuses
// one that loops or leaves the data area with the same error. Sizes are
// capped by the caller ([ReadFile]'s limit).
package imagefs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
)

// SectorSize is the logical sector size of the appliance disk (an SD
// card), of its image and of boot.img.
const SectorSize = 512

// SquashBlock is the squashfs block size the image builder writes
// (go-diskfs would otherwise take the 512-byte sector size).
const SquashBlock = 128 << 10

// MaxBootImg caps what is read of boot.img into memory: the manifest's
// largest boot_img_mib.
const MaxBootImg = 256 << 20

// maxManifest caps what is read of the manifest inside boot.img.
const maxManifest = 64 << 10

// Predict predicts the PCRs a built image's slot produces at boot, from
// the slot as written: the manifest at the top level of boot.img
// (image.ManifestName; the build puts the same bytes into the initramfs
// as /custodian.toml), measured over the slot's squashfs root (root, of
// rootSize bytes, the partition alone) with the modes it holds.
//
// go-diskfs does not report setuid, setgid or sticky bits; the builder
// never writes them, and an image that has them predicts a policy its
// device never reaches (a share sealed to it would not open).
func Predict(bootImg []byte, root io.ReaderAt, rootSize int64) (*bootpolicy.Policy, error) {
	inner, err := OpenFAT(NewStorage(bytes.NewReader(bootImg), nil, int64(len(bootImg))), 0, int64(len(bootImg)))
	if err != nil {
		return nil, fmt.Errorf("boot.img: %w", err)
	}
	raw, err := ReadFile(inner, image.ManifestName, maxManifest)
	if err != nil {
		return nil, fmt.Errorf("boot.img: %w", err)
	}
	m, err := image.ParseManifest(raw, "")
	if err != nil {
		return nil, fmt.Errorf("the manifest inside boot.img: %w", err)
	}
	pin, err := rootPin(inner)
	if err == nil {
		err = pin.CheckRoot(io.NewSectionReader(root, 0, rootSize))
	}
	if err != nil {
		return nil, fmt.Errorf("the root partition against boot.img's pin: %w (the device would not mount it)", err)
	}
	// The device mounts the pinned bytes and nothing after them.
	root, rootSize = io.NewSectionReader(root, 0, pin.Size), pin.Size
	p, err := Guard(func() (*bootpolicy.Policy, error) {
		sq, err := squashfs.Read(NewStorage(root, nil, rootSize), rootSize, 0, SquashBlock)
		if err != nil {
			return nil, err
		}
		return m.Spec().Predict(squash{sq}, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("the root partition: %w", err)
	}
	return p, nil
}

// RootPin is the pin of the root that boot.img's initramfs holds: what
// the device checks its root partition against before mounting it. On a
// build host it is only as trusted as boot.img, whose signature the
// board checks, not this code.
func RootPin(bootImg []byte) (image.RootPin, error) {
	inner, err := OpenFAT(NewStorage(bytes.NewReader(bootImg), nil, int64(len(bootImg))), 0, int64(len(bootImg)))
	if err != nil {
		return image.RootPin{}, fmt.Errorf("boot.img: %w", err)
	}
	return rootPin(inner)
}

func rootPin(bootImg filesystem.FileSystem) (image.RootPin, error) {
	initramfs, err := ReadFile(bootImg, image.InitramfsName, MaxBootImg)
	if err != nil {
		return image.RootPin{}, fmt.Errorf("boot.img: %w", err)
	}
	pin, err := image.InitramfsRootPin(initramfs)
	if err != nil {
		return image.RootPin{}, fmt.Errorf("boot.img's %s: %w", image.InitramfsName, err)
	}
	return pin, nil
}

// ErrDamaged is the error for a file system go-diskfs cannot read: its
// readers index by sizes taken from the disk and panic on some damaged
// ones (a directory entry longer than its cluster chain).
var ErrDamaged = errors.New("the file system is damaged")

// Guard runs f, turning a panic of the file system library into
// ErrDamaged.
func Guard[T any](f func() (T, error)) (out T, err error) {
	defer func() {
		if recover() != nil {
			var zero T
			out, err = zero, ErrDamaged
		}
	}()
	return f()
}

// OpenFAT opens the FAT file system (12, 16 or 32 bits) of size bytes at
// start on s. Its first FAT is checked before go-diskfs reads it: a
// cluster chain that loops or leaves the data area is refused with
// ErrDamaged (go-diskfs would follow it without end).
func OpenFAT(s backend.Storage, start, size int64) (filesystem.FileSystem, error) {
	return Guard(func() (filesystem.FileSystem, error) { return openFAT(s, start, size) })
}

func openFAT(s backend.Storage, start, size int64) (filesystem.FileSystem, error) {
	kind, err := checkFAT(s, start, size)
	if errors.Is(err, errChain) {
		return nil, fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	if err != nil {
		return nil, errors.New("not a FAT file system")
	}
	var f filesystem.FileSystem
	switch kind {
	case fat32Kind:
		f, err = fat32.Read(s, size, start, SectorSize)
	case fat16Kind:
		f, err = fat16.Read(s, size, start, SectorSize)
	default:
		f, err = fat12.Read(s, size, start, SectorSize)
	}
	if err != nil {
		return nil, errors.New("not a FAT file system")
	}
	return f, nil
}

// ReadFile reads a file of 1 to limit bytes from a go-diskfs FAT file
// system, whose ReadFile returns whole clusters: the directory entry has
// the length.
func ReadFile(fsys filesystem.FileSystem, name string, limit int64) ([]byte, error) {
	return Guard(func() ([]byte, error) { return readFile(fsys, name, limit) })
}

func readFile(fsys filesystem.FileSystem, name string, limit int64) ([]byte, error) {
	info, err := fsys.Stat(name)
	if err != nil {
		return nil, fmt.Errorf("no %s", name)
	}
	if info.IsDir() || info.Size() == 0 || info.Size() > limit {
		return nil, fmt.Errorf("%s is not a file of 1 to %d bytes", name, limit)
	}
	f, err := fsys.OpenFile(name, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	data := make([]byte, info.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return data, nil
}

// NewStorage is a go-diskfs backend over a disk given as an io.ReaderAt
// of size bytes, writable when w is set: go-diskfs opens disks by path,
// and images are read from open block devices, partitions of them, files
// and memory.
func NewStorage(r io.ReaderAt, w io.WriterAt, size int64) backend.Storage {
	return storage{SectionReader: io.NewSectionReader(r, 0, size), w: w}
}

type storage struct {
	*io.SectionReader
	w io.WriterAt
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
