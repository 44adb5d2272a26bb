package builder

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/custodian-project/custodian/firmware"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/layout"
)

// Fixed identifiers, for reproducible bytes. Partition n's GUID and the
// data file system's UUID end in n.
const (
	diskGUID     = "43555354-4f44-4941-4e00-000000000000"
	partGUIDBase = "43555354-4f44-4941-4e00-00000000000"
	dataUUID     = "43555354-4f44-4941-4e00-000000000106"
	dataHashSeed = "43555354-4f44-4941-4e00-000000000206"
)

// partition is one partition's size and content (nil: left zero).
type partition struct {
	mib  int
	data []byte
}

// dataReserveMiB is what the default data partition keeps for the
// ledger, the sealed files and the file system's own use, beside room
// for an update file in transfer/.
const dataReserveMiB = 64

// Sizes is the partition layout a build chose, in MiB.
type Sizes struct {
	Autoboot, Boot, Root, Data, Image int
	RootUsed                          int64 // bytes of the squashfs
}

// chooseSizes fits the partitions around boot.img and the root
// filesystem: boot_mib and root_mib default to twice what they hold (room
// for an update to grow), the data partition takes what image_mib leaves
// over.
func chooseSizes(m *image.Manifest, bootImgBytes, rootBytes int64) (Sizes, error) {
	s := Sizes{Autoboot: m.AutobootMiB, Boot: m.BootMiB, Root: m.RootMiB, Data: m.DataMiB, RootUsed: rootBytes}
	if s.Data == 0 {
		// The operator puts an update file on the data partition, beside
		// the ledger: room for one twice this image's.
		s.Data = dataReserveMiB + 2*updateMiB(bootImgBytes, rootBytes)
	}
	bootImgMiB := int((bootImgBytes + mib - 1) / mib)
	if s.Boot == 0 {
		// Room for an update's larger boot.img: the partition cannot grow.
		s.Boot = max(2*bootImgMiB, 24)
	} else if s.Boot < bootImgMiB+2 {
		return s, &SizeError{Key: "boot_mib", Given: s.Boot, Need: bootImgMiB + 2, What: "boot.img with boot.sig and config.txt"}
	}
	need := int((rootBytes + mib - 1) / mib)
	if s.Root == 0 {
		s.Root = max(2*need, 16)
	} else if s.Root < need {
		return s, &SizeError{Key: "root_mib", Given: s.Root, Need: need, What: "the root filesystem"}
	}
	// 1 MiB before the first partition, 1 MiB after the last for the
	// backup GPT.
	total := 1 + s.Autoboot + 2*s.Boot + 2*s.Root + s.Data + 1
	s.Image = total
	if m.ImageMiB != 0 {
		if m.ImageMiB < total {
			return s, &SizeError{Key: "image_mib", Given: m.ImageMiB, Need: total, What: "the partition layout"}
		}
		s.Data += m.ImageMiB - total
		s.Image = m.ImageMiB
	}
	return s, nil
}

// SizeError is a size the manifest gives that is too small.
type SizeError struct {
	Key         string
	Given, Need int
	What        string
}

func (e *SizeError) Error() string {
	return fmt.Sprintf("%s = %d is too small: %s needs %d MiB", e.Key, e.Given, e.What, e.Need)
}

// buildPartitions makes the content of the six partitions (see package
// layout): autoboot.txt booting slot A; slot A's boot partition with
// boot.img, boot.sig and the outer config.txt; slot B's boot partition
// an empty FAT, so that a tryboot of a slot no update has written stops
// at once (no boot.img) and falls back to A, and an update writes files
// into a file system that is there; root A; root B zero; data ext4.
func buildPartitions(m *image.Manifest, work string, bootImg, sig, root []byte) ([]partition, error) {
	s, err := chooseSizes(m, int64(len(bootImg)), int64(len(root)))
	if err != nil {
		return nil, err
	}
	t := m.Epoch()
	autoboot, err := makeFAT(filepath.Join(work, "autoboot.part"), s.Autoboot, "autoboot_mib", "CUSTAUTO", map[string][]byte{AutobootName: layout.Autoboot(layout.SlotA)}, t)
	if err != nil {
		return nil, fmt.Errorf("autoboot partition: %w", err)
	}
	bootA, err := makeFAT(filepath.Join(work, "boot-a.part"), s.Boot, "boot_mib", "CUSTBOOT-A", map[string][]byte{BootImgName: bootImg, BootSigName: sig, "config.txt": firmware.OuterConfigTxt}, t)
	if err != nil {
		return nil, fmt.Errorf("boot partition A (boot_mib): %w", err)
	}
	bootB, err := makeFAT(filepath.Join(work, "boot-b.part"), s.Boot, "boot_mib", "CUSTBOOT-B", nil, t)
	if err != nil {
		return nil, fmt.Errorf("boot partition B: %w", err)
	}
	data, err := makeExt4(filepath.Join(work, "data.part"), s.Data, m.SourceDateEpoch)
	if err != nil {
		return nil, err
	}
	parts := make([]partition, layout.PartitionCount+1)
	parts[0] = partition{s.Image, nil} // the whole disk
	parts[layout.AutobootPartition] = partition{s.Autoboot, autoboot}
	parts[layout.SlotA.BootPartition()] = partition{s.Boot, bootA}
	parts[layout.SlotB.BootPartition()] = partition{s.Boot, bootB}
	parts[layout.SlotA.RootPartition()] = partition{s.Root, root}
	parts[layout.SlotB.RootPartition()] = partition{s.Root, nil}
	parts[layout.DataPartition] = partition{s.Data, data}
	return parts, nil
}

// updatePartitions makes the content of an update file: slot A's boot
// partition and root partition alone, each as small as its content
// allows (the boot partition's FAT at boot.img plus 2 MiB, the root at
// the squashfs rounded up to a MiB), in a GPT of the appliance layout.
// update apply copies them over the start of the inactive slot's larger
// partitions: the Pi firmware reads a FAT by its own size, the kernel a
// squashfs by its bytes_used, and the measurement covers the files only.
func updatePartitions(m *image.Manifest, work string, bootImg, sig, root []byte) ([]partition, error) {
	bootMiB := int((int64(len(bootImg))+mib-1)/mib) + 2
	boot, err := makeFAT(filepath.Join(work, "update-boot.part"), bootMiB, "boot_img_mib", "CUSTBOOT-A", map[string][]byte{BootImgName: bootImg, BootSigName: sig, "config.txt": firmware.OuterConfigTxt}, m.Epoch())
	if err != nil {
		return nil, fmt.Errorf("the update's boot partition: %w", err)
	}
	rootMiB := int((int64(len(root)) + mib - 1) / mib)
	parts := make([]partition, layout.PartitionCount+1)
	parts[0] = partition{updateMiB(int64(len(bootImg)), int64(len(root))), nil}
	parts[layout.SlotA.BootPartition()] = partition{bootMiB, boot}
	parts[layout.SlotA.RootPartition()] = partition{rootMiB, root}
	return parts, nil
}

// updateMiB is the size of the update file of an image whose boot.img
// and root filesystem have these sizes (see updatePartitions).
func updateMiB(bootImgBytes, rootBytes int64) int {
	return 1 + int((bootImgBytes+mib-1)/mib) + 2 + int((rootBytes+mib-1)/mib) + 1
}

// Mke2fsConfig pins the data file system's features, so the host's
// /etc/mke2fs.conf does not change the bytes.
const mke2fsConfig = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384
[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// makeExt4 makes the empty data file system with the host's mke2fs:
// go-diskfs v1.9.4 writes an ext4 that e2fsck accepts, but with a random
// hash seed and journal UUID and the current time, which no option fixes.
// mke2fs gets a fixed UUID and hash seed and E2FSPROGS_FAKE_TIME.
func makeExt4(file string, sizeMiB int, epoch int64) ([]byte, error) {
	mkfs, err := exec.LookPath("mke2fs")
	if err != nil {
		return nil, errors.New("the data partition needs mke2fs on the build host (Debian package e2fsprogs)")
	}
	conf := file + ".conf"
	if err := os.WriteFile(conf, []byte(mke2fsConfig), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		return nil, err
	}
	if err := os.Truncate(file, int64(sizeMiB)*mib); err != nil {
		return nil, err
	}
	cmd := exec.Command(mkfs, "-q", "-F", "-t", "ext4", "-L", layout.PartitionName(layout.DataPartition), "-U", dataUUID,
		"-E", "hash_seed="+dataHashSeed+",root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard", file)
	cmd.Env = append(os.Environ(), "MKE2FS_CONFIG="+conf, "E2FSPROGS_FAKE_TIME="+strconv.FormatInt(epoch, 10))
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mke2fs for the data partition: %v: %s", err, out)
	}
	return os.ReadFile(file)
}

// writeDisk lays out the GPT disk, copies each partition's content in
// and writes the result to out.
func writeDisk(m *image.Manifest, file, out string, parts []partition) error {
	d, err := diskfs.Create(file, int64(parts[0].mib)*mib, sector)
	if err != nil {
		return err
	}
	defer d.Close()
	table := &gpt.Table{LogicalSectorSize: sector, PhysicalSectorSize: sector, GUID: diskGUID, ProtectiveMBR: true}
	starts := map[int]uint64{}
	start := uint64(firstLBA)
	for n := 1; n <= layout.PartitionCount; n++ {
		if parts[n].mib == 0 {
			continue // not in an update file
		}
		size := uint64(parts[n].mib) * mib / sector
		typ := gpt.LinuxFilesystem
		if n <= layout.SlotB.BootPartition() {
			typ = gpt.MicrosoftBasicData
		}
		table.Partitions = append(table.Partitions, &gpt.Partition{
			Index: n, Start: start, End: start + size - 1, Type: typ,
			Name: layout.PartitionName(n), GUID: partGUIDBase + strconv.Itoa(n),
		})
		starts[n] = start
		start += size
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("partitioning: %w", err)
	}
	f, err := d.Backend.Writable()
	if err != nil {
		return err
	}
	for n, at := range starts {
		if len(parts[n].data) > parts[n].mib*mib {
			return fmt.Errorf("partition %d (%s) holds %d bytes, more than its %d MiB", n, layout.PartitionName(n), len(parts[n].data), parts[n].mib)
		}
		if _, err := f.WriteAt(parts[n].data, int64(at)*sector); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	return durable.WriteFile(out, data, 0o644)
}
