package update

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat12"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/custodian-project/custodian/image/layout"
)

// tinyDisk is a GPT disk of the layout's six partitions, written by
// go-diskfs: slot A's boot partition of bootSectors, the others of 8
// sectors. fill, if set, writes into the boot partition.
func tinyDisk(tb testing.TB, bootSectors uint64, fill func(b backend.Storage, start, size int64)) []byte {
	tb.Helper()
	const otherSectors = 8
	sectors := 34 + bootSectors + 5*otherSectors + 34
	name := filepath.Join(tb.TempDir(), "tiny.img")
	b, err := file.CreateFromPath(name, int64(sectors)*SectorSize)
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	table := &gpt.Table{LogicalSectorSize: SectorSize, PhysicalSectorSize: SectorSize, ProtectiveMBR: true}
	start, bootStart := uint64(34), int64(0)
	for n := 1; n <= layout.PartitionCount; n++ {
		size := uint64(otherSectors)
		if n == layout.SlotA.BootPartition() {
			size, bootStart = bootSectors, int64(start)*SectorSize
		}
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: n, Start: start, End: start + size - 1, Type: gpt.LinuxFilesystem, Name: layout.PartitionName(n)})
		start += size
	}
	w, err := b.Writable()
	if err != nil {
		tb.Fatal(err)
	}
	if err := table.Write(w, int64(sectors)*SectorSize); err != nil {
		tb.Fatal(err)
	}
	if fill != nil {
		fill(b, bootStart, int64(bootSectors)*SectorSize)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// tinyGPT is the fuzzers' seed: a disk of the layout with no file systems.
func tinyGPT(tb testing.TB) []byte { return tinyDisk(tb, 8, nil) }

// tinyImage is a small image whose slot A boot partition is a FAT12 file
// system with boot.img and a boot.sig for it (its signature line is not
// checked here: the board checks it): the fuzzer's way into the
// FAT reader.
func tinyImage(tb testing.TB) []byte {
	return tinyDisk(tb, 128, func(b backend.Storage, start, size int64) {
		fsys, err := fat12.Create(b, size, start, SectorSize, "BOOT", true)
		if err != nil {
			tb.Fatal(err)
		}
		bootImg := []byte("not a boot image\n")
		sum := sha256.Sum256(bootImg)
		for name, data := range map[string][]byte{BootImgName: bootImg, BootSigName: []byte(hex.EncodeToString(sum[:]) + "\nts: 1767225600\nrsa2048: " + strings.Repeat("5a", 256) + "\n")} {
			f, err := fsys.OpenFile("/"+name, os.O_CREATE|os.O_RDWR)
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				tb.Fatal(err)
			}
			f.Close()
		}
	})
}

// An image with slot A's boot.img and boot.sig opens.
func TestOpenTinyImage(t *testing.T) {
	data := tinyImage(t)
	im, err := OpenImage(bytesAt(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if string(im.bootImg) != "not a boot image\n" {
		t.Fatalf("boot.img read as %q", im.bootImg)
	}
}

// A directory entry longer than its clusters makes go-diskfs's FAT reader
// panic; OpenImage says the file system is damaged instead.
func TestOpenImageWithADamagedFAT(t *testing.T) {
	data := tinyImage(t)
	entry := bytes.Index(data, []byte("BOOT    IMG"))
	if entry < 0 {
		t.Fatal("no directory entry for boot.img")
	}
	binary.LittleEndian.PutUint32(data[entry+28:], 0x4011)
	if _, err := OpenImage(bytesAt(data), int64(len(data))); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("got %v, want the damaged file system refused", err)
	}
}

func TestReadTableTiny(t *testing.T) {
	data := tinyGPT(t)
	tab, err := ReadTable(bytesAt(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != layout.PartitionCount || tab.Partitions[4].Start != (34+24)*SectorSize || tab.Partitions[4].Size != 8*SectorSize {
		t.Fatalf("read %+v", tab.Partitions)
	}
	// One changed byte in the entries breaks their checksum.
	data[2*SectorSize+56] ^= 1
	if _, err := ReadTable(bytesAt(data), int64(len(data))); err == nil {
		t.Fatal("a changed partition entry was accepted")
	}
}

type bytesAt []byte

func (b bytesAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, os.ErrInvalid
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, os.ErrInvalid
	}
	return n, nil
}

// Whatever the bytes, ReadTable returns, and what it accepts keeps to
// the layout inside the disk.
func FuzzReadTable(f *testing.F) {
	f.Add(tinyGPT(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := ReadTable(bytesAt(data), int64(len(data)))
		if err != nil {
			return
		}
		for n, p := range tab.Partitions {
			if p.Name != layout.PartitionName(n) || p.Start < tableSectors*SectorSize || p.Start+p.Size > int64(len(data)) || p.Size <= 0 {
				t.Fatalf("accepted partition %+v of a %d-byte disk", p, len(data))
			}
		}
	})
}

// OpenImage on any bytes returns (an image file is the operator's input,
// read on the device): no panic, no hang, and what it accepts has slot A.
func FuzzOpenImage(f *testing.F) {
	f.Add(tinyGPT(f))
	f.Add(tinyImage(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := OpenImage(bytesAt(data), int64(len(data)))
		if err != nil {
			return
		}
		if im.Boot.Number != layout.SlotA.BootPartition() || im.Root.Number != layout.SlotA.RootPartition() {
			t.Fatalf("accepted an image without slot A: %+v %+v", im.Boot, im.Root)
		}
	})
}
