package update

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/image/layout"
)

// DiskOf finds the whole disk the file system at path lives on (sys is
// "/sys" on the device), and checks that path is on the layout's data
// partition of it: the appliance disk, named by what the data directory
// is on, never by a device path guessed in advance.
func DiskOf(sys, path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", err
	}
	disk, part, err := diskOfDevice(sys, unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if part != layout.DataPartition {
		return "", fmt.Errorf("%s is on partition %d of %s, not on the data partition (%d): give the appliance disk with --disk", path, part, disk, layout.DataPartition)
	}
	return disk, nil
}

// diskOfDevice names the disk that holds the partition major:minor, and
// the partition's number, from sysfs: /sys/dev/block/M:m links to
// .../block/<disk>/<partition>, whose "partition" file has the number.
func diskOfDevice(sys string, major, minor uint32) (string, int, error) {
	link := filepath.Join(sys, "dev", "block", fmt.Sprintf("%d:%d", major, minor))
	raw, err := os.ReadFile(filepath.Join(link, "partition"))
	if errors.Is(err, os.ErrNotExist) {
		return "", 0, fmt.Errorf("the device %d:%d is not a disk partition: give the appliance disk with --disk", major, minor)
	}
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || n < 1 {
		return "", 0, fmt.Errorf("sysfs gives partition number %q for %d:%d", strings.TrimSpace(string(raw)), major, minor)
	}
	target, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", 0, err
	}
	disk := filepath.Base(filepath.Dir(target))
	if disk == "." || disk == "/" || disk == "block" {
		return "", 0, fmt.Errorf("sysfs names no disk above the partition %d:%d", major, minor)
	}
	return "/dev/" + disk, n, nil
}

// RebootTryboot syncs the file systems and restarts the board with the
// argument "0 tryboot" (reboot(2), LINUX_REBOOT_CMD_RESTART2): the Pi
// firmware then boots the [tryboot] section of autoboot.txt, once. It
// returns only on failure.
func RebootTryboot() error {
	unix.Sync()
	arg, err := unix.BytePtrFromString("0 tryboot")
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_REBOOT, unix.LINUX_REBOOT_MAGIC1, unix.LINUX_REBOOT_MAGIC2,
		unix.LINUX_REBOOT_CMD_RESTART2, uintptr(unsafe.Pointer(arg)), 0, 0)
	return fmt.Errorf("reboot with tryboot: %w", errno)
}
