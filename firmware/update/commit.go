package update

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/diskfs/go-diskfs/backend"

	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/layout"
)

// AutobootName is the file on the autoboot partition that picks the slot.
const AutobootName = "autoboot.txt"

// maxAutoboot caps what is read of autoboot.txt.
const maxAutoboot = 4096

// Commit makes the running slot the one the firmware boots: it writes
// layout.Autoboot(running slot) to autoboot.txt on the autoboot partition
// (FAT, through go-diskfs: no mount), syncs, and reads it back through a
// fresh open of the file system. It refuses unless this boot is a tryboot
// (anything else already boots by default) and while pending names
// resealed files reseal --finish has not promoted: until they are, the
// shares open only under the previous image, the default one.
//
// autoboot.txt for slot A and for slot B have the same length and differ
// in two digits in one sector, so an existing file is rewritten in place:
// one sector write, which a power cut leaves either old or new.
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
	if err := writeAutoboot(imagefs.NewStorage(dev, dev, devSize), p, want); err != nil {
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

func writeAutoboot(s backend.Storage, p Partition, want []byte) error {
	_, err := imagefs.Guard(func() (struct{}, error) { return struct{}{}, writeAutobootUnguarded(s, p, want) })
	return err
}

func writeAutobootUnguarded(s backend.Storage, p Partition, want []byte) error {
	fsys, err := imagefs.OpenFAT(s, p.Start, p.Size)
	if err != nil {
		return err
	}
	flag := os.O_RDWR
	if old, err := imagefs.ReadFile(fsys, AutobootName, maxAutoboot); err != nil || len(old) != len(want) {
		flag |= os.O_CREATE | os.O_TRUNC
	}
	f, err := fsys.OpenFile(AutobootName, flag)
	if err != nil {
		return err
	}
	if _, err := f.Write(want); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
