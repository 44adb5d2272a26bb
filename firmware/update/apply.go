package update

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/layout"
)

// Device is the appliance disk an update writes: a block device, or a
// regular file in tests.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Approver accepts a new image's predicted policy, or says why the device
// must not boot it (its sealed files would not open there).
type Approver func(*bootpolicy.Policy) error

// Written is what Apply did.
type Written struct {
	Slot   layout.Slot        // the slot written, the one tryboot tries
	Policy *bootpolicy.Policy // the new image's predicted policy
	Boot   [sha256.Size]byte  // SHA-256 of the boot partition as written and read back
	Root   [sha256.Size]byte  // the same for the root partition
}

// ErrTryboot refuses to write while the running slot is only being tried:
// the other slot is the one the firmware falls back to.
var ErrTryboot = errors.New("this boot is a tryboot: the other slot is the one the device falls back to")

// Apply writes the image's slot A into the device's inactive slot, in
// this order, stopping at the first refusal with nothing written:
//
//  1. the running boot is not a tryboot (the inactive slot is then the
//     fallback, and must stay);
//  2. the device's GPT has every partition of the layout, and the image's
//     boot and root partitions fit the inactive slot's;
//  3. approve accepts the image's predicted policy;
//  4. the boot partition, then the root partition, are copied raw, synced,
//     read back and compared by SHA-256;
//  5. the written slot is read as the device will boot it: the approved
//     boot.img, and a root that matches its pin.
//
// Apply touches nothing but the inactive slot's two partitions: not the
// running slot, the autoboot partition nor the data partition.
func Apply(dev Device, devSize int64, boot Boot, im *Image, approve Approver) (*Written, error) {
	if boot.Tryboot {
		return nil, fmt.Errorf("%w (slot %s)", ErrTryboot, boot.Slot.Other())
	}
	dst, err := ReadTable(dev, devSize)
	if err != nil {
		return nil, fmt.Errorf("the device: %w", err)
	}
	for n := 1; n <= layout.PartitionCount; n++ {
		if _, err := dst.Get(n); err != nil {
			return nil, fmt.Errorf("the device: %w", err)
		}
	}
	target := boot.Slot.Other()
	bootTo, rootTo := dst.Partitions[target.BootPartition()], dst.Partitions[target.RootPartition()]
	if err := fits(im.Boot, bootTo); err != nil {
		return nil, err
	}
	if err := fits(im.Root, rootTo); err != nil {
		return nil, err
	}
	policy, err := im.Policy()
	if err != nil {
		return nil, err
	}
	if err := approve(policy); err != nil {
		return nil, err
	}
	w := &Written{Slot: target, Policy: policy}
	if w.Boot, err = copyPartition(dev, bootTo, im.r, im.Boot); err != nil {
		return nil, err
	}
	if w.Root, err = copyPartition(dev, rootTo, im.r, im.Root); err != nil {
		return nil, err
	}
	if err := checkWritten(dev, devSize, bootTo, rootTo, im); err != nil {
		return nil, fmt.Errorf("slot %s as written is not the image that was checked (%w): the image file changed while it was copied. Nothing reboots and the running slot is unchanged; copy the image again and apply that copy", target, err)
	}
	return w, nil
}

// checkWritten reads the written slot as the device will boot it:
// boot.img (and its boot.sig) must be the one whose policy was approved,
// and the root must be the one that boot.img pins. The image was read
// twice (checked, then copied); this catches a file that changed between
// the two reads.
func checkWritten(dev Device, devSize int64, bootTo, rootTo Partition, im *Image) error {
	bootImg, err := readBoot(dev, devSize, bootTo)
	if err != nil {
		return err
	}
	if !bytes.Equal(bootImg, im.bootImg) {
		return errors.New("its boot.img differs from the one approved")
	}
	pin, err := imagefs.RootPin(bootImg)
	if err != nil {
		return err
	}
	return pin.CheckRoot(io.NewSectionReader(dev, rootTo.Start, rootTo.Size))
}

func fits(from, to Partition) error {
	if from.Size > to.Size {
		return fmt.Errorf("the image's %s (%d bytes) does not fit this device's %s (%d bytes): build the image with the device's partition sizes",
			from.Name, from.Size, to.Name, to.Size)
	}
	return nil
}

// copyChunk is the unit of copying and reading back.
const copyChunk = 1 << 20

// copyPartition copies partition from of src over the start of partition
// to of dev, syncs, reads it back from the device and compares the
// SHA-256 of what it wrote with what it reads.
func copyPartition(dev Device, to Partition, src io.ReaderAt, from Partition) ([sha256.Size]byte, error) {
	var zero [sha256.Size]byte
	wrote := sha256.New()
	buf := make([]byte, copyChunk)
	for off := int64(0); off < from.Size; off += copyChunk {
		chunk := buf[:min(copyChunk, from.Size-off)]
		if _, err := src.ReadAt(chunk, from.Start+off); err != nil {
			return zero, fmt.Errorf("reading the image's %s: %w", from.Name, err)
		}
		wrote.Write(chunk)
		if _, err := dev.WriteAt(chunk, to.Start+off); err != nil {
			return zero, fmt.Errorf("writing %s: %w", to.Name, err)
		}
	}
	if err := dev.Sync(); err != nil {
		return zero, fmt.Errorf("writing %s: %w", to.Name, err)
	}
	if err := dropCache(dev, to.Start, from.Size); err != nil {
		return zero, fmt.Errorf("reading %s back: %w", to.Name, err)
	}
	read := sha256.New()
	if _, err := io.Copy(read, io.NewSectionReader(dev, to.Start, from.Size)); err != nil {
		return zero, fmt.Errorf("reading %s back: %w", to.Name, err)
	}
	var sum [sha256.Size]byte
	if !bytes.Equal(wrote.Sum(sum[:0]), read.Sum(nil)) {
		return zero, fmt.Errorf("%s reads back different from what was written: the card may be failing (nothing reboots; the running slot is unchanged)", to.Name)
	}
	return sum, nil
}
