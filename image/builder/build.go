// Package builder writes the SD-card image a manifest describes.
//
// The image is an MBR disk with two partitions: a FAT16 boot partition
// holding boot.img (a FAT16 image with the kernel, initramfs, device trees,
// config.txt, cmdline.txt and the manifest, which the Pi's EEPROM verifies
// against boot.sig when SIGNED_BOOT=1), boot.sig and an outer config.txt;
// and a read-only squashfs root filesystem. The same manifest gives the
// same bytes: times come from source_date_epoch, owners are root, modes
// are normalised ([image.NormalMode]), and the MBR disk ID is fixed.
package builder

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/custodian-project/custodian/firmware"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/bootsig"
)

// Names on the boot partition.
const (
	BootImgName = "boot.img"
	BootSigName = "boot.sig"
)

const (
	sector     = 512
	bootStart  = 2048       // first partition at 1 MiB, as SD cards erase in such blocks
	diskID     = 0x43555354 // fixed MBR disk identifier (fdisk: 0x43555354), for reproducible bytes
	mib        = 1 << 20
	squashSize = 128 << 10 // squashfs block size; go-diskfs would take the 512-byte sector size
)

// Options are the choices a build makes beyond the manifest.
type Options struct {
	// Key signs boot.img (RSA-2048). Nil writes an unsigned boot.sig,
	// which only a board without secure boot accepts.
	Key crypto.Signer
	// TargetSoC, if set, goes into boot.sig ("2711" or "2712").
	TargetSoC string
	// Progress, if not nil, is told each step as it starts.
	Progress func(step string, n, total int)
}

// Build assembles the image the manifest describes and writes it to out
// (replaced atomically; an out that exists and is not a regular file is
// refused). SOURCE_DATE_EPOCH is set for the duration, as go-diskfs reads
// it from the environment: do not run two builds in one process at once.
func Build(m *image.Manifest, out string, opt Options) error {
	if err := durable.CheckReplaceable(out); err != nil {
		return err
	}
	if opt.Progress == nil {
		opt.Progress = func(string, int, int) {}
	}
	restore := setEnv("SOURCE_DATE_EPOCH", strconv.FormatInt(m.SourceDateEpoch, 10))
	defer restore()
	work, err := os.MkdirTemp("", "custodian-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	opt.Progress("boot.img", 1, 4)
	bootImg, err := buildBootImg(m, filepath.Join(work, BootImgName))
	if err != nil {
		return fmt.Errorf("building boot.img: %w", err)
	}
	sig, err := bootsig.Sign(bootImg, m.SourceDateEpoch, opt.TargetSoC, opt.Key)
	if err != nil {
		return err
	}
	opt.Progress("boot partition", 2, 4)
	diskPath := filepath.Join(work, "disk.img")
	if err := buildDisk(m, diskPath, bootImg, sig.Marshal()); err != nil {
		return err
	}
	opt.Progress("root filesystem", 3, 4)
	if err := buildRoot(m, diskPath); err != nil {
		return fmt.Errorf("building the root filesystem: %w", err)
	}
	opt.Progress("writing "+out, 4, 4)
	data, err := os.ReadFile(diskPath)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(data[440:], diskID)
	if err := freeCluster2(data[bootStart*sector:]); err != nil {
		return err
	}
	return durable.WriteFile(out, data, 0o644)
}

// setEnv sets an environment variable and returns a function that puts
// the old value back.
func setEnv(key, val string) func() {
	old, had := os.LookupEnv(key)
	os.Setenv(key, val)
	return func() {
		if had {
			os.Setenv(key, old)
		} else {
			os.Unsetenv(key)
		}
	}
}

// bootFiles lists boot.img's content: name inside boot.img → bytes.
func bootFiles(m *image.Manifest) (map[string][]byte, error) {
	files := map[string][]byte{image.ManifestName: m.Raw(), "config.txt": firmware.ConfigTxt, "cmdline.txt": firmware.CmdlineTxt}
	for name, src := range map[string]string{"config.txt": m.Boot.Config, "cmdline.txt": m.Boot.Cmdline} {
		if src == "" {
			continue
		}
		data, err := os.ReadFile(m.Resolve(src))
		if err != nil {
			return nil, err
		}
		files[name] = data
	}
	for _, f := range m.Boot.Files {
		data, err := os.ReadFile(m.Resolve(f.Src))
		if err != nil {
			return nil, err
		}
		files[f.Dst] = data
	}
	return files, nil
}

// buildBootImg writes boot.img, a standalone FAT16 file system, and
// returns its bytes.
func buildBootImg(m *image.Manifest, file string) ([]byte, error) {
	files, err := bootFiles(m)
	if err != nil {
		return nil, err
	}
	d, err := diskfs.Create(file, int64(m.BootImgMiB)*mib, sector)
	if err != nil {
		return nil, err
	}
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat16, VolumeLabel: "CUSTBOOTIMG", Reproducible: true})
	if err != nil {
		d.Close()
		return nil, err
	}
	err = writeFAT(fsys, files, m.Epoch())
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return data, freeCluster2(data)
}

// freeCluster2 works around a go-diskfs FAT16 bug: mkfs marks cluster 2
// as allocated, as a FAT32 root directory would be, though FAT16 keeps its
// root directory outside the data area. Nothing uses the cluster (files
// are allocated after it), so fsck reports it as lost; mark it free in
// every FAT copy. fat is the file system's bytes from its boot sector on.
func freeCluster2(fat []byte) error {
	if len(fat) < 512 {
		return errors.New("FAT file system too short")
	}
	bps := int(binary.LittleEndian.Uint16(fat[11:]))
	reserved := int(binary.LittleEndian.Uint16(fat[14:]))
	copies := int(fat[16])
	perFAT := int(binary.LittleEndian.Uint16(fat[22:]))
	for i := range copies {
		off := (reserved+i*perFAT)*bps + 2*2
		if off+2 > len(fat) {
			return errors.New("FAT file system too short")
		}
		if binary.LittleEndian.Uint16(fat[off:]) == 0xffff {
			binary.LittleEndian.PutUint16(fat[off:], 0)
		}
	}
	return nil
}

// writeFAT writes files into a FAT file system, creating directories, and
// sets every entry's times (go-diskfs stamps the current time otherwise).
func writeFAT(fsys filesystem.FileSystem, files map[string][]byte, t time.Time) error {
	for _, name := range sortedKeys(files) {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if err := fsys.Mkdir("/" + dir); err != nil {
				return fmt.Errorf("mkdir %s: %w", dir, err)
			}
		}
		f, err := fsys.OpenFile("/"+name, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		_, err = io.Copy(f, bytes.NewReader(files[name]))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return fs.WalkDir(fsys, ".", func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		return fsys.Chtimes("/"+p, t, t, t)
	})
}

// buildDisk partitions the disk and fills the boot partition.
func buildDisk(m *image.Manifest, file string, bootImg, sig []byte) error {
	d, err := diskfs.Create(file, int64(m.ImageMiB)*mib, sector)
	if err != nil {
		return err
	}
	defer d.Close()
	bootSectors := uint32(m.BootMiB * mib / sector)
	rootStart := bootStart + bootSectors
	table := &mbr.Table{
		LogicalSectorSize: sector, PhysicalSectorSize: sector,
		Partitions: []*mbr.Partition{
			{Index: 1, Bootable: true, Type: mbr.Fat16bLBA, Start: bootStart, Size: bootSectors},
			{Index: 2, Type: mbr.Linux, Start: rootStart, Size: uint32(m.ImageMiB*mib/sector) - rootStart},
		},
	}
	if err := d.Partition(table); err != nil {
		return fmt.Errorf("partitioning: %w", err)
	}
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat16, VolumeLabel: "CUSTBOOT", Reproducible: true})
	if err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	files := map[string][]byte{BootImgName: bootImg, BootSigName: sig, "config.txt": firmware.OuterConfigTxt}
	if err := writeFAT(fsys, files, m.Epoch()); err != nil {
		return fmt.Errorf("boot partition: %w", err)
	}
	return nil
}
