// Package layout is the appliance disk's partition table as every part of
// the system agrees on it: the image builder writes it, the early init finds
// its root and data partitions by these names, and an update writes the
// inactive slot.
//
// The disk is GPT with six partitions, found by their GPT names (never by
// device path, so the same init works on an SD card, /dev/mmcblk0pN, and on
// an emulated disk, /dev/vdaN):
//
//	1 custodian-autoboot  FAT: autoboot.txt, which picks the boot slot
//	2 custodian-boot-a    FAT: boot.img (kernel, initramfs, config), boot.sig
//	3 custodian-boot-b    the same for slot B
//	4 custodian-root-a    squashfs: the read-only root of slot A
//	5 custodian-root-b    the same for slot B
//	6 custodian-data      ext4: /var/lib/custodian, never touched by an update
//
// A slot is a boot partition with its root partition: slot A is 2 and 4,
// slot B is 3 and 5. The Pi firmware reads autoboot.txt from partition 1:
// it boots the slot named in [all], and the other one once when the reboot
// asked for tryboot. Partition numbers are 1-based, as the firmware counts.
package layout

import (
	"fmt"
	"strings"
)

// Partition numbers, 1-based.
const (
	AutobootPartition = 1
	DataPartition     = 6
)

// PartitionCount is the number of partitions on the appliance disk.
const PartitionCount = 6

// Mount points of the running appliance.
const (
	DataMount = "/var/lib/custodian"
)

// Slot is one of the two boot+root pairs.
type Slot byte

// The two slots.
const (
	SlotA Slot = 'a'
	SlotB Slot = 'b'
)

func (s Slot) String() string { return strings.ToUpper(string(rune(s))) }

// Valid reports whether s is SlotA or SlotB.
func (s Slot) Valid() bool { return s == SlotA || s == SlotB }

// Other is the slot an update writes while s runs.
func (s Slot) Other() Slot {
	if s == SlotA {
		return SlotB
	}
	return SlotA
}

// BootPartition is the number of the slot's boot partition.
func (s Slot) BootPartition() int {
	if s == SlotB {
		return 3
	}
	return 2
}

// RootPartition is the number of the slot's root partition.
func (s Slot) RootPartition() int {
	if s == SlotB {
		return 5
	}
	return 4
}

// SlotOfBootPartition is the slot whose boot partition is number n: what
// the firmware booted, as it reports it to the kernel (the device tree's
// /chosen/bootloader/partition on a Pi).
func SlotOfBootPartition(n int) (Slot, error) {
	switch n {
	case SlotA.BootPartition():
		return SlotA, nil
	case SlotB.BootPartition():
		return SlotB, nil
	}
	return 0, fmt.Errorf("partition %d is not a boot partition (%d is slot A, %d slot B)", n, SlotA.BootPartition(), SlotB.BootPartition())
}

// PartitionName is the GPT name of partition n (1..PartitionCount).
func PartitionName(n int) string {
	switch n {
	case AutobootPartition:
		return "custodian-autoboot"
	case SlotA.BootPartition():
		return "custodian-boot-a"
	case SlotB.BootPartition():
		return "custodian-boot-b"
	case SlotA.RootPartition():
		return "custodian-root-a"
	case SlotB.RootPartition():
		return "custodian-root-b"
	case DataPartition:
		return "custodian-data"
	}
	return ""
}

// Autoboot is the autoboot.txt that makes active the slot the firmware
// boots, and the other slot the one a tryboot reboot tries once. A tryboot
// that does not come up (the watchdog fires, or the power is cut) falls
// back to active without anything being written.
func Autoboot(active Slot) []byte {
	return []byte(fmt.Sprintf(`# Written by custodian: the boot slot, and the one a tryboot reboot tries once.
[all]
tryboot_a_b=1
boot_partition=%d
[tryboot]
boot_partition=%d
`, active.BootPartition(), active.Other().BootPartition()))
}
