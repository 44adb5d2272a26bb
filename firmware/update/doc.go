// Package update installs a new image on the appliance's A/B disk
// (image/layout) without touching the running slot or the data partition.
//
// A built image carries its content in slot A. On the device:
//
//   - RunningSlot says which slot the firmware booted, and whether this
//     boot is the one-shot tryboot of the other slot: from the Pi
//     firmware's device tree (/proc/device-tree/chosen/bootloader/partition
//     and .../tryboot, big-endian u32 cells; the partition without the
//     tryboot cell is refused as unknown), else from the kernel
//     command line's custodian.boot_partition=N.
//   - OpenImage reads the image's GPT (strictly: an intact primary table,
//     the layout's names for their numbers, no overlaps), and its slot A
//     boot partition, which must hold boot.img and a signed boot.sig for
//     it (an unsigned one is refused: a locked board would not boot it).
//     Image.Policy predicts the PCRs it produces with the function image
//     measure --image runs (imagefs.Predict).
//   - Apply refuses during a tryboot (the other slot is then the fallback),
//     when the image's partitions do not fit the inactive slot's, and when
//     the caller's Approver refuses the predicted policy (the command
//     checks that every sealed file of the data directory will open under
//     it); only then it copies the boot and root partitions raw into the
//     inactive slot, syncs, and compares their SHA-256 read back from the
//     device. RebootTryboot then restarts the board into that slot once.
//   - Commit, in the tryboot and once reseal --finish left nothing pending,
//     writes layout.Autoboot(running slot) over autoboot.txt's bytes on
//     the FAT autoboot partition (no mount): one sector write, never the
//     FAT, so a power cut leaves the old file or the new one; it refuses a
//     file of another length, text or cluster layout than image build
//     writes. It syncs and reads it back.
//
// If the tried slot does not come up, the firmware's next ordinary boot is
// the default slot again: nothing but Commit changes the default. The
// functions work on io.ReaderAt/io.WriterAt disks of a given size, so the
// same code runs on /dev/mmcblk0 and on image files; the sector size is
// 512 bytes.
package update
