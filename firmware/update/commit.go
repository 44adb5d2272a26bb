package update

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/layout"
)

// AutobootName is the file on the autoboot partition that picks the slot.
const AutobootName = "autoboot.txt"

// maxAutoboot caps what is read of autoboot.txt.
const maxAutoboot = 4096

// Commit makes the running slot the one the firmware boots: it writes
// layout.Autoboot(running slot) over autoboot.txt's bytes on the autoboot
// partition (FAT, no mount: the file's one sector, found through the
// root directory), syncs, and reads it back through a fresh open of the
// file system. It refuses unless this boot is a tryboot
// (anything else already boots by default) and while pending names
// resealed files reseal --finish has not promoted: until they are, the
// shares open only under the previous image, the default one.
//
// autoboot.txt for slot A and for slot B have the same length and fit one
// sector, so the file is rewritten in place: one sector write, which a
// power cut leaves either old or new. Commit refuses a file of another
// length, text or cluster layout rather than rewrite the FAT.
func Commit(dev Device, devSize int64, boot Boot, pending []string) error {
	if !boot.Tryboot {
		return fmt.Errorf("this boot is not a tryboot: slot %s is already the one the device boots; commit runs once, in the tryboot after update apply", boot.Slot)
	}
	if len(pending) > 0 {
		return fmt.Errorf("reseal --finish has not completed (%s still waiting): the shares open only under the previous image", strings.Join(pending, ", "))
	}
	t, err := ReadTable(dev, devSize)
	if err != nil {
		return fmt.Errorf("the device: %w", err)
	}
	p, err := t.Get(layout.AutobootPartition)
	if err != nil {
		return fmt.Errorf("the device: %w", err)
	}
	want := layout.Autoboot(boot.Slot)
	if err := writeAutoboot(dev, devSize, p, want); err != nil {
		return fmt.Errorf("writing %s: %w", AutobootName, err)
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", AutobootName, err)
	}
	if err := dropCache(dev, p.Start, p.Size); err != nil {
		return err
	}
	got, err := ReadAutoboot(dev, devSize)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s reads back different from what was written: the card may be failing", AutobootName)
	}
	return nil
}

// autobootShort is autoboot.txt's 8.3 name in the FAT directory.
const autobootShort = "AUTOBOOTTXT"

// writeAutoboot writes want over autoboot.txt's bytes in place: one write
// of the one sector that holds them, so a power cut leaves the old file or
// the new one. The FAT and the directory are not written (the entry keeps
// its time). It refuses a file that is not the one image build writes: a
// single cluster of len(want) bytes, whose text is one of the layout's.
func writeAutoboot(dev Device, devSize int64, p Partition, want []byte) error {
	old, err := ReadAutoboot(dev, devSize)
	if err != nil {
		return err
	}
	ext, err := imagefs.RootFileExtent(dev, p.Start, p.Size, autobootShort)
	if err != nil {
		return fmt.Errorf("the autoboot partition: %w", err)
	}
	known := bytes.Equal(old, layout.Autoboot(layout.SlotA)) || bytes.Equal(old, layout.Autoboot(layout.SlotB))
	if !known || ext.Size != int64(len(want)) || ext.Clusters != 1 || ext.Off%SectorSize != 0 {
		return fmt.Errorf("%s is not the file custodian image build writes (%d bytes in %d clusters; want %d bytes in one): commit rewrites only that file, in place, so that a power cut cannot leave the board without one, and wrote nothing; copy partition 1 (%s) of the image this device was installed from back onto the card (it boots slot A), then apply the update again",
			AutobootName, ext.Size, ext.Clusters, len(want), layout.PartitionName(layout.AutobootPartition))
	}
	sector := make([]byte, SectorSize)
	if _, err := dev.ReadAt(sector, ext.Off); err != nil {
		return err
	}
	if !bytes.Equal(sector[:len(old)], old) {
		return fmt.Errorf("the autoboot partition's directory does not lead to the %s its file system reads: the partition is damaged", AutobootName)
	}
	if bytes.Equal(old, want) {
		return nil
	}
	copy(sector, want)
	_, err = dev.WriteAt(sector, ext.Off)
	return err
}

// ReadAutoboot reads autoboot.txt from the device's autoboot partition.
func ReadAutoboot(dev io.ReaderAt, devSize int64) ([]byte, error) {
	t, err := ReadTable(dev, devSize)
	if err != nil {
		return nil, fmt.Errorf("the device: %w", err)
	}
	p, err := t.Get(layout.AutobootPartition)
	if err != nil {
		return nil, fmt.Errorf("the device: %w", err)
	}
	fsys, err := imagefs.OpenFAT(imagefs.NewStorage(dev, nil, devSize), p.Start, p.Size)
	if err != nil {
		return nil, fmt.Errorf("the autoboot partition: %w", err)
	}
	data, err := imagefs.ReadFile(fsys, AutobootName, maxAutoboot)
	if err != nil {
		return nil, errors.New("the autoboot partition has no readable " + AutobootName)
	}
	return data, nil
}
