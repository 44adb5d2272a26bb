package update

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image/bootsig"
	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/layout"
)

// Files on a slot's boot partition.
const (
	BootImgName = "boot.img"
	BootSigName = "boot.sig"
)

// Image is a built appliance image: its content is in slot A.
type Image struct {
	r          io.ReaderAt
	Table      *Table
	Boot, Root Partition
	bootImg    []byte
}

// OpenImage reads a built image of size bytes: a GPT of the appliance
// layout whose slot A holds a FAT boot partition with boot.img and a
// boot.sig whose digest is boot.img's and that carries a signature (the
// board checks it), and a root partition.
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
	if im.bootImg, err = readBoot(r, size, im.Boot); err != nil {
		return nil, fmt.Errorf("the image's boot partition: %w", err)
	}
	return im, nil
}

// readBoot reads boot.img from the boot partition p of the disk r (of
// size bytes), with its boot.sig: it must carry a signature (the board
// checks it) over exactly this boot.img.
func readBoot(r io.ReaderAt, size int64, p Partition) ([]byte, error) {
	boot, err := imagefs.OpenFAT(imagefs.NewStorage(r, nil, size), p.Start, p.Size)
	if err != nil {
		return nil, err
	}
	bootImg, err := imagefs.ReadFile(boot, BootImgName, imagefs.MaxBootImg)
	if err != nil {
		return nil, err
	}
	sig, err := imagefs.ReadFile(boot, BootSigName, 4096)
	if err != nil {
		return nil, fmt.Errorf("%w (build it with custodian image build --key)", err)
	}
	parsed, err := bootsig.Parse(sig)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BootSigName, err)
	}
	if parsed.Signature == nil {
		// A board with secure boot refuses it and falls back without a
		// word; one without secure boot boots a signed boot.img as well.
		return nil, fmt.Errorf("%s carries no signature (no rsa2048 line): build it with custodian image build --key", BootSigName)
	}
	digest := sha256.Sum256(bootImg)
	if subtle.ConstantTimeCompare(digest[:], parsed.Digest[:]) != 1 {
		return nil, fmt.Errorf("%s is not for its %s", BootSigName, BootImgName)
	}
	return bootImg, nil
}

// MaxUpdate caps the image an update file decompresses to, in memory: it
// holds one slot's boot and root partitions (the example's: 79 MiB), and a
// Pi may have 1 GiB.
const MaxUpdate = 512 << 20

// gzipMagic starts a gzip stream (RFC 1952).
var gzipMagic = []byte{0x1f, 0x8b}

// IsCompressed tells an update file (image build --update-out, gzip) from
// an image written as it is, by its first bytes.
func IsCompressed(head []byte) bool { return bytes.HasPrefix(head, gzipMagic) }

// ReadUpdate decompresses an update file into memory: one gzip member of
// at most MaxUpdate bytes, and nothing after it; then OpenImage reads it.
func ReadUpdate(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(r) // gzip reads no further than its stream from a ByteReader
	z, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("the update file is not gzip: %w", err)
	}
	z.Multistream(false)
	data, err := io.ReadAll(io.LimitReader(z, MaxUpdate+1))
	if err != nil {
		return nil, fmt.Errorf("the update file is damaged: %w", err)
	}
	if len(data) > MaxUpdate {
		return nil, fmt.Errorf("the update file holds more than %d MiB; one slot's partitions are far smaller", MaxUpdate>>20)
	}
	if n, _ := io.CopyN(io.Discard, br, 1); n != 0 {
		return nil, errors.New("the update file has bytes after its gzip stream")
	}
	return data, nil
}

// Policy predicts the PCRs the image produces at boot with the same
// function as image measure --image (imagefs.Predict): the manifest at
// the top of slot A's boot.img, measured over root A's squashfs as
// written.
func (im *Image) Policy() (*bootpolicy.Policy, error) {
	p, err := imagefs.Predict(im.bootImg, io.NewSectionReader(im.r, im.Root.Start, im.Root.Size), im.Root.Size)
	if err != nil {
		return nil, fmt.Errorf("the image's slot A: %w", err)
	}
	return p, nil
}
