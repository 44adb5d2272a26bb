package update

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/filesystem/fat16"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/bootsig"
	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/layout"
)

// Files on a slot's boot partition.
const (
	BootImgName = "boot.img"
	BootSigName = "boot.sig"
)

// squashBlock is the squashfs block size the image builder writes.
const squashBlock = 128 << 10

// maxBootImg caps what is read of boot.img into memory.
const maxBootImg = 256 << 20

// Image is a built appliance image: its content is in slot A.
type Image struct {
	r          io.ReaderAt
	Table      *Table
	Boot, Root Partition
	bootImg    []byte
}

// OpenImage reads a built image of size bytes: a GPT of the appliance
// layout whose slot A holds a FAT boot partition with boot.img and a
// boot.sig whose digest is boot.img's (the board checks its signature),
// and a root partition.
func OpenImage(r io.ReaderAt, size int64) (*Image, error) {
	t, err := ReadTable(r, size)
	if err != nil {
		return nil, fmt.Errorf("the image: %w", err)
	}
	im := &Image{r: r, Table: t}
	if im.Boot, err = t.Get(layout.SlotA.BootPartition()); err != nil {
		return nil, fmt.Errorf("the image: %w", err)
	}
	if im.Root, err = t.Get(layout.SlotA.RootPartition()); err != nil {
		return nil, fmt.Errorf("the image: %w", err)
	}
	boot, err := openFAT(newStorage(r, nil, size), im.Boot)
	if err != nil {
		return nil, fmt.Errorf("the image's boot partition: %w", err)
	}
	if im.bootImg, err = readFile(boot, BootImgName, maxBootImg); err != nil {
		return nil, fmt.Errorf("the image's boot partition: %w", err)
	}
	sig, err := readFile(boot, BootSigName, 4096)
	if err != nil {
		return nil, fmt.Errorf("the image's boot partition: %w (build it with custodian image build --key)", err)
	}
	parsed, err := bootsig.Parse(sig)
	if err != nil {
		return nil, fmt.Errorf("the image's %s: %w", BootSigName, err)
	}
	digest := sha256.Sum256(im.bootImg)
	if subtle.ConstantTimeCompare(digest[:], parsed.Digest[:]) != 1 {
		return nil, fmt.Errorf("the image's %s is not for its %s", BootSigName, BootImgName)
	}
	return im, nil
}

// Policy predicts the PCRs the image produces at boot, as image measure
// --image does: the manifest inside boot.img, measured over the squashfs
// root as written.
func (im *Image) Policy() (*bootpolicy.Policy, error) {
	inner, err := openFAT(newStorage(bytes.NewReader(im.bootImg), nil, int64(len(im.bootImg))), Partition{Size: int64(len(im.bootImg))})
	if err != nil {
		return nil, fmt.Errorf("the image's %s: %w", BootImgName, err)
	}
	raw, err := readFile(inner, image.ManifestName, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("the image's %s: %w", BootImgName, err)
	}
	m, err := image.ParseManifest(raw, "")
	if err != nil {
		return nil, fmt.Errorf("the image's manifest: %w", err)
	}
	p, err := guard(func() (*bootpolicy.Policy, error) {
		sq, err := squashfs.Read(newStorage(im.r, nil, im.Table.DiskSize), im.Root.Size, im.Root.Start, squashBlock)
		if err != nil {
			return nil, err
		}
		return m.Spec().Predict(imagefs.Squash{FileSystem: sq}, nil)
	})
	if err != nil {
		return nil, fmt.Errorf("the image's root partition: %w", err)
	}
	return p, nil
}

// errDamaged is the error for a file system go-diskfs cannot read: its
// readers index by sizes taken from the disk and panic on some damaged
// ones (a directory entry longer than its cluster chain), so every read
// of an image's or the device's file systems goes through guard.
var errDamaged = errors.New("the file system is damaged")

// guard runs f, turning a panic of the file system library into errDamaged.
func guard[T any](f func() (T, error)) (out T, err error) {
	defer func() {
		if recover() != nil {
			var zero T
			out, err = zero, errDamaged
		}
	}()
	return f()
}

// openFAT opens the FAT file system (12, 16 or 32 bits) on partition p.
func openFAT(s storage, p Partition) (filesystem.FileSystem, error) {
	return guard(func() (filesystem.FileSystem, error) { return openFATUnguarded(s, p) })
}

func openFATUnguarded(s storage, p Partition) (filesystem.FileSystem, error) {
	if f, err := fat32.Read(s, p.Size, p.Start, SectorSize); err == nil {
		return f, nil
	}
	if f, err := fat16.Read(s, p.Size, p.Start, SectorSize); err == nil {
		return f, nil
	}
	f, err := fat12.Read(s, p.Size, p.Start, SectorSize)
	if err != nil {
		return nil, errors.New("not a FAT file system")
	}
	return f, nil
}

// readFile reads a file of at most limit bytes from a go-diskfs FAT file
// system, whose ReadFile returns whole clusters: the directory entry has
// the length.
func readFile(fsys filesystem.FileSystem, name string, limit int64) ([]byte, error) {
	return guard(func() ([]byte, error) { return readFileUnguarded(fsys, name, limit) })
}

func readFileUnguarded(fsys filesystem.FileSystem, name string, limit int64) ([]byte, error) {
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
