package update

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/custodian-project/custodian/image/layout"
)

// Boot is what the firmware booted: the slot, and whether this boot is the
// one-shot tryboot of the other slot.
type Boot struct {
	Slot    layout.Slot
	Tryboot bool
	// Pi is set when the Pi firmware reported the boot (device tree), so a
	// tryboot reboot means something.
	Pi bool
}

// The Pi firmware's report of the boot, under /proc: big-endian u32 cells.
const (
	dtPartition = "device-tree/chosen/bootloader/partition"
	dtTryboot   = "device-tree/chosen/bootloader/tryboot"
)

// cmdlineParam names the boot partition where no Pi firmware reports it
// (an emulated board).
const cmdlineParam = "custodian.boot_partition="

// RunningSlot reads what the firmware booted from a /proc tree (proc is
// "/proc" on the device): the Pi firmware's device-tree report, else the
// kernel command line's custodian.boot_partition=N. A device-tree report
// of the partition without the tryboot cell is refused: the slot is
// then unknown.
func RunningSlot(proc string) (Boot, error) {
	raw, err := os.ReadFile(filepath.Join(proc, dtPartition))
	if errors.Is(err, os.ErrNotExist) {
		return cmdlineSlot(proc)
	}
	if err != nil {
		return Boot{}, err
	}
	n, err := parseCell(raw)
	if err != nil {
		return Boot{}, fmt.Errorf("the firmware's boot partition: %w", err)
	}
	slot, err := layout.SlotOfBootPartition(int(n))
	if err != nil {
		return Boot{}, fmt.Errorf("the firmware booted %w", err)
	}
	b := Boot{Slot: slot, Pi: true}
	raw, err = os.ReadFile(filepath.Join(proc, dtTryboot))
	if errors.Is(err, os.ErrNotExist) {
		// Without the cell this boot may be the one-shot tryboot: taking
		// it for an ordinary boot would let update apply overwrite the
		// slot the firmware falls back to.
		return Boot{}, errors.New("the firmware reports the boot partition but not whether this boot is a tryboot (no /proc/device-tree/chosen/bootloader/tryboot): the running slot is unknown; update the Pi's bootloader EEPROM to one that reports tryboot, then try again")
	}
	if err != nil {
		return Boot{}, err
	}
	t, err := parseCell(raw)
	if err != nil || t > 1 {
		return Boot{}, fmt.Errorf("the firmware's tryboot flag is not 0 or 1")
	}
	b.Tryboot = t == 1
	return b, nil
}

// parseCell decodes one device-tree cell: exactly four bytes, big-endian.
func parseCell(raw []byte) (uint32, error) {
	if len(raw) != 4 {
		return 0, fmt.Errorf("a device-tree cell of %d bytes, not 4", len(raw))
	}
	return binary.BigEndian.Uint32(raw), nil
}

func cmdlineSlot(proc string) (Boot, error) {
	raw, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	if err != nil {
		return Boot{}, err
	}
	n, err := parseCmdline(string(raw))
	if err != nil {
		return Boot{}, err
	}
	slot, err := layout.SlotOfBootPartition(n)
	if err != nil {
		return Boot{}, fmt.Errorf("%s: %w", strings.TrimSuffix(cmdlineParam, "="), err)
	}
	return Boot{Slot: slot}, nil
}

// parseCmdline finds the one custodian.boot_partition=N on a kernel
// command line; N is a decimal partition number.
func parseCmdline(cmdline string) (int, error) {
	if len(cmdline) > 4096 {
		return 0, errors.New("the kernel command line is longer than a kernel's")
	}
	value, found := "", 0
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, cmdlineParam); ok {
			value, found = v, found+1
		}
	}
	switch {
	case found == 0:
		return 0, errors.New("cannot tell which slot is running: no boot partition from the Pi firmware (/proc/device-tree/chosen/bootloader) and no custodian.boot_partition= on the kernel command line")
	case found > 1:
		return 0, errors.New("custodian.boot_partition= appears more than once on the kernel command line")
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < 1 || n > layout.PartitionCount || strconv.Itoa(n) != value {
		return 0, fmt.Errorf("custodian.boot_partition=%q is not a partition number", value)
	}
	return n, nil
}
