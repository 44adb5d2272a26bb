package earlyinit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/image"
)

// RootPinPath is the pin of the slot's root in the initramfs.
const RootPinPath = "/" + image.RootPinName

// loadRootPin reads the initramfs's pin of the root filesystem.
func loadRootPin() (image.RootPin, error) {
	data, err := readSmall(RootPinPath, 256)
	if err == nil {
		var pin image.RootPin
		if pin, err = image.ParseRootPin(data); err == nil {
			return pin, nil
		}
	}
	return image.RootPin{}, fail("reading the root pin "+RootPinPath, err, "the boot image is built by custodian image build, which pins the root of its slot; rebuild and sign it")
}

// copyPinnedRoot copies the pinned root from the partition dev into
// sealed memory and checks the copy against the pin. The kernel then
// parses only those checked bytes: the card is read once, and nothing on
// it (nor a card that answers differently on a second read) can change
// them afterwards. It returns the loop device that serves the copy.
func copyPinnedRoot(dev string, pin image.RootPin) (string, error) {
	part, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer part.Close()
	mem, err := sealedCopy(part, pin.Size)
	if err != nil {
		return "", err
	}
	defer mem.Close()
	if err := pin.CheckRoot(io.NewSectionReader(mem, 0, pin.Size)); err != nil {
		return "", err
	}
	return attachLoop(mem, pin.Size)
}

// sealedCopy copies at most n bytes of r into a memory file that nobody,
// this process included, can change afterwards: it is sealed before
// anything reads it, so what the check reads is what the loop device
// serves.
func sealedCopy(r io.Reader, n int64) (*os.File, error) {
	fd, err := unix.MemfdCreate("custodian-root", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("making room in memory for the root: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "custodian-root")
	if _, err := io.Copy(mem, io.LimitReader(r, n)); err != nil {
		mem.Close()
		return nil, fmt.Errorf("copying the root into memory: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		mem.Close()
		return nil, fmt.Errorf("sealing the root's copy: %w", err)
	}
	return mem, nil
}

// attachLoop makes a free loop device serve f, read-only.
func attachLoop(f *os.File, size int64) (string, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("no loop devices: %w", err)
	}
	defer ctl.Close()
	n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return "", fmt.Errorf("finding a free loop device: %w", err)
	}
	name := fmt.Sprintf("/dev/loop%d", n)
	loop, err := openAppearing(name)
	if err != nil {
		return "", err
	}
	defer loop.Close()
	cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
	cfg.Info.Sizelimit = uint64(size)
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY
	if err := unix.IoctlLoopConfigure(int(loop.Fd()), &cfg); err != nil {
		return "", fmt.Errorf("attaching the root's copy to %s: %w", name, err)
	}
	return name, nil
}

// openAppearing opens a device node that devtmpfs may still be creating.
func openAppearing(name string) (*os.File, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, err := os.OpenFile(name, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
