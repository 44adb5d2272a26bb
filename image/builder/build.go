// Package builder writes the SD-card image a manifest describes.
//
// The image is a GPT disk with the six partitions of package image/layout:
// the autoboot partition (autoboot.txt, booting slot A), slot A's boot
// partition with boot.img (a FAT16 image with the kernel, the initramfs
// the build makes, device trees, firmware, config.txt, cmdline.txt and the
// manifest, which the Pi's EEPROM verifies against boot.sig when
// SIGNED_BOOT=1), boot.sig and an outer config.txt; an empty FAT for slot
// B; slot A's read-only squashfs root (gzip); zeros for root B; and an
// empty ext4 data partition. Inputs are host files or files inside Debian
// packages pinned by SHA-256 (package image/deb reads them).
//
// The same manifest and inputs give the same bytes: times come from
// source_date_epoch, owners are root, modes are normalised
// ([image.NormalMode]), and every GUID, UUID and hash seed is fixed.
package builder

import (
	"bytes"
	"compress/gzip"
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
	"strings"
	"syscall"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"

	"github.com/custodian-project/custodian/firmware"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/bootsig"
)

// Names on the boot partition.
const (
	BootImgName  = "boot.img"
	BootSigName  = "boot.sig"
	AutobootName = "autoboot.txt"
	KernelName   = "kernel8.img"
)

const (
	sector   = 512
	firstLBA = 2048 // first partition at 1 MiB, as SD cards erase in such blocks
	mib      = 1 << 20
)

// Options are the choices a build makes beyond the manifest.
type Options struct {
	// Key signs boot.img (RSA-2048). Nil writes an unsigned boot.sig,
	// which only a board without secure boot accepts.
	Key crypto.Signer
	// TargetSoC, if set, goes into boot.sig ("2711" or "2712") and names
	// the device tree boot.img must hold.
	TargetSoC string
	// DebDir, if set, is where the manifest's debs are read from (by
	// base name) instead of their path beside the manifest.
	DebDir string
	// KernelOut and InitramfsOut, if set, receive copies of the kernel
	// and the initramfs put into boot.img (for an emulated boot).
	KernelOut, InitramfsOut string
	// UpdateOut, if set, receives the update file: slot A's boot and root
	// partitions alone, as small as they go, in a GPT, gzip-compressed
	// (what update apply takes and an operator carries to the device).
	UpdateOut string
	// Progress, if not nil, is told each step as it starts.
	Progress func(step string, n, total int)
}

// Build assembles the image the manifest describes and writes it to out
// (replaced atomically; an out that exists and is not a regular file is
// refused). SOURCE_DATE_EPOCH is set for the duration, as go-diskfs reads
// it from the environment: do not run two builds in one process at once.
func Build(m *image.Manifest, out string, opt Options) error {
	for _, f := range []string{out, opt.KernelOut, opt.InitramfsOut, opt.UpdateOut} {
		if f == "" {
			continue
		}
		if err := durable.CheckReplaceable(f); err != nil {
			return &OutputError{err}
		}
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

	const steps = 6
	if err := checkBootFiles(m, opt.TargetSoC); err != nil {
		return err
	}
	opt.Progress("reading inputs", 1, steps)
	sources, err := readSources(m, opt.DebDir, m.Sources())
	if err != nil {
		return err
	}
	rootDir, err := rootTree(m, sources, work)
	if err != nil {
		return err
	}
	files, err := bootFiles(m, sources)
	if err != nil {
		return err
	}
	// The root comes first: the initramfs pins its size and digest.
	opt.Progress("root filesystem", 2, steps)
	root, err := buildRoot(m, rootDir, work)
	if err != nil {
		return fmt.Errorf("building the root filesystem: %w", err)
	}
	if len(root) > image.MaxRootBytes {
		return fmt.Errorf("the root filesystem is %d bytes compressed; the appliance holds its root in memory and takes at most %d: leave files out of rootfs.dir", len(root), image.MaxRootBytes)
	}
	opt.Progress("initramfs", 3, steps)
	if files[image.InitramfsName], err = buildInitramfs(m, os.DirFS(rootDir), sources, image.PinRoot(root)); err != nil {
		return err
	}
	opt.Progress("boot.img", 4, steps)
	bootImgMiB := m.BootImgMiB
	if bootImgMiB == 0 {
		bootImgMiB = fatNeed(files)
	}
	bootImg, err := makeFAT(filepath.Join(work, BootImgName), bootImgMiB, "boot_img_mib", "CUSTBOOTIMG", files, m.Epoch())
	if err != nil {
		return fmt.Errorf("building boot.img: %w", err)
	}
	sig, err := bootsig.Sign(bootImg, m.SourceDateEpoch, opt.TargetSoC, opt.Key)
	if err != nil {
		return err
	}
	opt.Progress("partitions", 5, steps)
	parts, err := buildPartitions(m, work, bootImg, sig.Marshal(), root)
	if err != nil {
		return err
	}
	opt.Progress("writing "+out, 6, steps)
	if err := writeDisk(m, filepath.Join(work, "disk.img"), out, parts); err != nil {
		return err
	}
	if opt.UpdateOut != "" {
		update, err := updatePartitions(m, work, bootImg, sig.Marshal(), root)
		if err != nil {
			return err
		}
		raw := filepath.Join(work, "update.raw")
		if err := writeDisk(m, filepath.Join(work, "update.img"), raw, update); err != nil {
			return err
		}
		if err := gzipFile(raw, opt.UpdateOut); err != nil {
			return err
		}
	}
	return writeBootCopies(opt, files)
}

// gzipFile writes the gzip of file to out: the update file's free space
// is zeros, and the operator carries it over a serial line. The header
// holds no name and no time, so the bytes depend on the content alone.
func gzipFile(file, out string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	z, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := z.Write(data); err != nil {
		return err
	}
	if err := z.Close(); err != nil {
		return err
	}
	return durable.WriteFile(out, buf.Bytes(), 0o644)
}

// OutputError is an output path the build will not replace.
type OutputError struct{ Err error }

func (e *OutputError) Error() string { return e.Err.Error() }
func (e *OutputError) Unwrap() error { return e.Err }

// writeBootCopies writes the kernel and initramfs copies asked for.
func writeBootCopies(opt Options, files map[string][]byte) error {
	for file, name := range map[string]string{opt.KernelOut: KernelName, opt.InitramfsOut: image.InitramfsName} {
		if file == "" {
			continue
		}
		if err := durable.WriteFile(file, files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// BootFileError is a file boot.img must hold and the manifest does not
// give: Key is the manifest key that adds it.
type BootFileError struct{ Name, What, Key string }

func (e *BootFileError) Error() string {
	return fmt.Sprintf("boot.img has no %s (%s)", e.Name, e.What)
}

// checkBootFiles refuses, before anything is read, a boot.img the board
// cannot boot: without the kernel or without the target's device tree.
func checkBootFiles(m *image.Manifest, soc string) error {
	files := map[string]bool{}
	for _, f := range m.Boot.Files {
		files[f.Dst] = true
	}
	if !files[KernelName] {
		return &BootFileError{KernelName, "the kernel", "boot.files"}
	}
	dtbs := map[string]string{"2711": "bcm2711-rpi-4-b.dtb", "2712": "bcm2712-rpi-5-b.dtb"}
	if soc != "" {
		if err := bootsig.CheckTargetSoC(soc); err != nil {
			return err
		}
		if !files[dtbs[soc]] {
			return &BootFileError{dtbs[soc], "the device tree of target SoC " + soc, "boot.files"}
		}
		return nil
	}
	if !files[dtbs["2711"]] && !files[dtbs["2712"]] {
		return &BootFileError{dtbs["2711"] + " or " + dtbs["2712"], "a Pi 4 or Pi 5 device tree", "boot.files"}
	}
	return nil
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

// bootFiles lists boot.img's content but the initramfs: name inside
// boot.img → bytes.
func bootFiles(m *image.Manifest, sources map[string][]byte) (map[string][]byte, error) {
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
		files[f.Dst] = sources[f.Src]
	}
	return files, nil
}

// makeFAT writes a standalone FAT16 file system of sizeMiB (the manifest's
// key sizeKey) holding files and returns its bytes.
func makeFAT(file string, sizeMiB int, sizeKey, label string, files map[string][]byte, t time.Time) ([]byte, error) {
	d, err := diskfs.Create(file, int64(sizeMiB)*mib, sector)
	if err != nil {
		return nil, err
	}
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeFat16, VolumeLabel: label, Reproducible: true})
	if err != nil {
		d.Close()
		return nil, err
	}
	err = writeFAT(fsys, files, t)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) || strings.Contains(err.Error(), "no space left") {
			return nil, &SizeError{Key: sizeKey, Given: sizeMiB, Need: fatNeed(files), What: "what goes into it"}
		}
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return data, freeCluster2(data)
}

// fatNeed is the size in MiB of a FAT16 file system that holds files:
// their bytes, a few percent for the tables and cluster slack, and at
// least the 8 MiB FAT16 needs.
func fatNeed(files map[string][]byte) int {
	return max(totalSize(files)*21/20/mib+2, 8)
}

func totalSize(files map[string][]byte) int {
	n := 0
	for _, f := range files {
		n += len(f)
	}
	return n
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
