package earlyinit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/image"
)

// RootPinPath is the pin of the slot's root in the initramfs.
const RootPinPath = "/" + image.RootPinName

// memoryLeft is what must stay free beside the root's copy: the daemon,
// and an update held in memory while it is applied.
const memoryLeft = 256 << 20

// loadRootPin reads the initramfs's pin of the root filesystem.
func loadRootPin(file string) (image.RootPin, error) {
	data, err := readSmall(file, 256)
	if err == nil {
		var pin image.RootPin
		if pin, err = image.ParseRootPin(data); err == nil {
			return pin, nil
		}
	}
	return image.RootPin{}, fail("reading the root pin "+file, err, "the boot image is built by custodian image build, which pins the root of its slot; rebuild and sign it")
}

// copyPinnedRoot copies the pinned root from the partition dev into
// sealed memory and checks the copy against the pin. The kernel then
// parses only those checked bytes: the card is read once, and nothing on
// it (nor a card that answers differently on a second read) can change
// them afterwards. It returns the loop device that serves the copy, or a
// Failure naming the stage that failed; name is the root as the console
// shows it.
func copyPinnedRoot(c console, name, dev string, pin image.RootPin) (string, error) {
	if err := checkMemory(pin.Size, "/proc/meminfo"); err != nil {
		return "", fail("making room for "+name+" in memory", err, "the root's size in the manifest's rootfs.dir, or a board with more memory")
	}
	c.printf("copying %s (%d bytes) into memory", name, pin.Size)
	mem, err := copyFrom(dev, pin.Size)
	if err != nil {
		return "", fail("copying "+name+" into memory", err, "the SD card (a read error shows in the kernel log)")
	}
	defer mem.Close()
	if err := pin.CheckRoot(io.NewSectionReader(mem, 0, pin.Size)); err != nil {
		return "", fail(name+" is not the root its boot image pins", err,
			"that the slot was written completely and from the same build as its boot partition: an interrupted update leaves it so, and a changed card is refused here")
	}
	c.printf("%s matches its pin: %d bytes, SHA-256 %x", name, pin.Size, pin.SHA256)
	loop, err := attachLoop(mem, pin.Size)
	if err != nil {
		return "", fail("attaching the copy of "+name+" to a loop device", err, "the loop module in /modules/order (drivers/block/loop.ko), or a kernel with it built in")
	}
	return loop, nil
}

// checkMemory refuses a root whose copy would leave less than memoryLeft
// available: PID 1 cannot be chosen by the OOM killer, so running out
// later would end in a kernel panic, with no message on the console.
func checkMemory(size int64, meminfo string) error {
	avail, err := memAvailable(meminfo)
	if err != nil {
		return err
	}
	if size+memoryLeft > avail {
		return fmt.Errorf("the root is %d MiB and %d MiB must stay free, but only %d MiB are available", size>>20, memoryLeft>>20, avail>>20)
	}
	return nil
}

// memAvailable reads MemAvailable from /proc/meminfo, in bytes.
func memAvailable(meminfo string) (int64, error) {
	f, err := os.Open(meminfo)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: MemAvailable is %q", meminfo, rest)
		}
		return kib << 10, nil
	}
	return 0, fmt.Errorf("%s has no MemAvailable line", meminfo)
}

// copyFrom copies n bytes of the partition dev into sealed memory, and
// drops the partition's pages from the cache: the copy is the only one
// kept, for as long as the device runs.
func copyFrom(dev string, n int64) (*os.File, error) {
	part, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer part.Close()
	mem, err := sealedCopy(part, n)
	if err != nil {
		return nil, err
	}
	_ = unix.Fadvise(int(part.Fd()), 0, n, unix.FADV_DONTNEED)
	return mem, nil
}

// sealedCopy copies at most n bytes of r into a memory file that nobody,
// this process included, can change afterwards: it is sealed before
// anything reads it, so what the check reads is what the loop device
// serves.
func sealedCopy(r io.Reader, n int64) (*os.File, error) {
	fd, err := unix.MemfdCreate("custodian-root", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("making a memory file: %w", err)
	}
	mem := os.NewFile(uintptr(fd), "custodian-root")
	if _, err := io.Copy(mem, io.LimitReader(r, n)); err != nil {
		mem.Close()
		return nil, err
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		mem.Close()
		return nil, fmt.Errorf("sealing the copy: %w", err)
	}
	return mem, nil
}

// attachLoop makes a free loop device serve f, read-only.
func attachLoop(f *os.File, size int64) (string, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", errors.New("no loop devices (/dev/loop-control is missing)")
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
	// Read-only twice over: the flag, and the device opened read-only
	// (the kernel then makes the loop read-only whatever the flags say).
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY
	if err := unix.IoctlLoopConfigure(int(loop.Fd()), &cfg); err != nil {
		return "", fmt.Errorf("configuring %s: %w", name, err)
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
