package earlyinit

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/custodian-project/custodian/image/layout"
)

// CmdlineBootPartition is the kernel command line parameter that names the
// boot partition where no Pi firmware reports it (an emulated boot).
const CmdlineBootPartition = "custodian.boot_partition"

// BootSource says where the boot partition number came from.
type BootSource string

// Sources of the boot partition number.
const (
	FromFirmware BootSource = "the firmware"
	FromCmdline  BootSource = "the kernel command line"
)

// BootSlot finds the slot that booted. The Pi firmware reports its boot
// partition in procDir/device-tree/chosen/bootloader/partition (a
// big-endian 32-bit number); without it, the kernel command line
// (procDir/cmdline) must say custodian.boot_partition=N once. Both come
// from the signed boot image or the firmware that checked it.
func BootSlot(procDir string) (layout.Slot, int, BootSource, error) {
	n, src, err := bootPartition(procDir)
	if err != nil {
		return 0, 0, "", err
	}
	slot, err := layout.SlotOfBootPartition(n)
	if err != nil {
		return 0, 0, "", fmt.Errorf("%s says the boot partition is %d: %w", src, n, err)
	}
	return slot, n, src, nil
}

func bootPartition(procDir string) (int, BootSource, error) {
	dt := filepath.Join(procDir, "device-tree", "chosen", "bootloader", "partition")
	raw, err := readSmall(dt, 64)
	if err == nil {
		if len(raw) != 4 {
			return 0, "", fmt.Errorf("%s holds %d bytes, not a 32-bit number", dt, len(raw))
		}
		return int(binary.BigEndian.Uint32(raw)), FromFirmware, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, "", err
	}
	cmdline, err := readSmall(filepath.Join(procDir, "cmdline"), 4096)
	if err != nil {
		return 0, "", err
	}
	n, err := cmdlinePartition(string(cmdline))
	return n, FromCmdline, err
}

func cmdlinePartition(cmdline string) (int, error) {
	var values []string
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, CmdlineBootPartition+"="); ok {
			values = append(values, v)
		}
	}
	switch {
	case len(values) == 0:
		return 0, fmt.Errorf("the firmware did not report the boot partition and the kernel command line has no %s=N", CmdlineBootPartition)
	case len(values) > 1:
		return 0, fmt.Errorf("the kernel command line sets %s more than once", CmdlineBootPartition)
	}
	n, err := strconv.Atoi(values[0])
	if err != nil || strconv.Itoa(n) != values[0] {
		return 0, fmt.Errorf("the kernel command line's %s=%q is not a partition number", CmdlineBootPartition, values[0])
	}
	return n, nil
}

// Partition is a block device partition as the kernel lists it.
type Partition struct {
	Dev    string // device name under /dev, e.g. mmcblk0p4
	Number int    // 1-based, PARTN
	Name   string // GPT partition name, PARTNAME
}

// Partitions lists the partitions in sysBlock (/sys/class/block) that
// have a GPT name, from each device's uevent file.
func Partitions(sysBlock string) ([]Partition, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return nil, err
	}
	var parts []Partition
	for _, e := range entries {
		raw, err := readSmall(filepath.Join(sysBlock, e.Name(), "uevent"), 4096)
		if err != nil {
			continue // a device that went away, or has no uevent
		}
		p, ok := parseUevent(raw)
		if ok {
			parts = append(parts, p)
		}
	}
	return parts, nil
}

func parseUevent(raw []byte) (Partition, bool) {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			kv[k] = v
		}
	}
	n, err := strconv.Atoi(kv["PARTN"])
	dev := kv["DEVNAME"]
	if kv["DEVTYPE"] != "partition" || kv["PARTNAME"] == "" || err != nil || dev == "" || strings.ContainsAny(dev, "/") || strings.HasPrefix(dev, ".") {
		return Partition{}, false
	}
	return Partition{Dev: dev, Number: n, Name: kv["PARTNAME"]}, true
}

// FindPartition picks the one partition named layout.PartitionName(n). It
// refuses two of them (a second appliance disk plugged in: the init would
// not know which one the firmware booted) and one whose number is not n.
func FindPartition(parts []Partition, n int) (Partition, error) {
	name := layout.PartitionName(n)
	var found []Partition
	for _, p := range parts {
		if p.Name == name {
			found = append(found, p)
		}
	}
	switch {
	case len(found) == 0:
		return Partition{}, fmt.Errorf("no partition is named %s", name)
	case len(found) > 1:
		return Partition{}, fmt.Errorf("partitions %s and %s are both named %s", found[0].Dev, found[1].Dev, name)
	case found[0].Number != n:
		return Partition{}, fmt.Errorf("partition %s is named %s but is number %d, not %d", found[0].Dev, name, found[0].Number, n)
	}
	return found[0], nil
}

// readSmall reads a file of at most limit bytes.
func readSmall(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", file, limit)
	}
	return b, err
}
