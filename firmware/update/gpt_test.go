package update

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/custodian-project/custodian/image/layout"
)

// tinyGPT is a 128-sector disk with the layout's six partitions of 8
// sectors each, written by go-diskfs: the fuzzer's seed.
func tinyGPT(tb testing.TB) []byte {
	tb.Helper()
	name := filepath.Join(tb.TempDir(), "tiny.img")
	b, err := file.CreateFromPath(name, 128*SectorSize)
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	table := &gpt.Table{LogicalSectorSize: SectorSize, PhysicalSectorSize: SectorSize, ProtectiveMBR: true}
	for n := 1; n <= layout.PartitionCount; n++ {
		start := uint64(34 + 8*(n-1))
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: n, Start: start, End: start + 7, Type: gpt.LinuxFilesystem, Name: layout.PartitionName(n)})
	}
	w, err := b.Writable()
	if err != nil {
		tb.Fatal(err)
	}
	if err := table.Write(w, 128*SectorSize); err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	return data
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
