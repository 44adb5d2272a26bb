package update

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/custodian-project/custodian/image/imagefs"
	"github.com/custodian-project/custodian/image/layout"
)

// SectorSize is the logical sector size of the appliance disk (an SD
// card) and of its image.
const SectorSize = imagefs.SectorSize

// maxEntries caps the GPT's partition entries: the standard array holds
// 128, and the appliance uses layout.PartitionCount.
const maxEntries = 128

// tableSectors is the room a GPT of 128 entries takes at each end of the
// disk (the backup has no MBR sector, the primary one more): no partition
// may reach into it.
const tableSectors = 34

// Partition is one entry of the appliance's GPT, in bytes.
type Partition struct {
	Number      int
	Name        string
	Start, Size int64
}

// Table is a disk's GPT, checked against the appliance layout: every
// partition it holds has the layout's name for its number, lies inside
// the disk, and overlaps no other.
type Table struct {
	DiskSize   int64
	Partitions map[int]Partition
}

// Get returns partition n, or an error naming it when the table lacks it.
func (t *Table) Get(n int) (Partition, error) {
	p, ok := t.Partitions[n]
	if !ok {
		return Partition{}, fmt.Errorf("the disk has no partition %d (%s)", n, layout.PartitionName(n))
	}
	return p, nil
}

// ReadTable reads the primary GPT of a disk of size bytes. Its header and
// entry array must be intact (a damaged primary table is refused, not
// repaired from the backup), then go-diskfs decodes the entries.
func ReadTable(r io.ReaderAt, size int64) (*Table, error) {
	if err := checkHeader(r, size); err != nil {
		return nil, fmt.Errorf("not a GPT disk of the appliance layout: %w", err)
	}
	raw, err := gpt.Read(imagefs.NewStorage(r, nil, size), SectorSize, SectorSize)
	if err != nil {
		return nil, fmt.Errorf("not a GPT disk of the appliance layout: %w", err)
	}
	t := &Table{DiskSize: size, Partitions: map[int]Partition{}}
	for _, p := range raw.Partitions {
		part, err := checkPartition(p, size)
		if err != nil {
			return nil, err
		}
		t.Partitions[part.Number] = part
	}
	return t, t.checkOverlaps()
}

// checkHeader checks the primary GPT header at LBA 1 and the CRC of its
// entry array before the library reads them, so that no size in them is
// taken on trust (an entry size of 0 would make the library loop).
func checkHeader(r io.ReaderAt, size int64) error {
	h := make([]byte, 92)
	if size < 3*SectorSize {
		return errors.New("the disk is too small for a GPT")
	}
	if _, err := r.ReadAt(h, SectorSize); err != nil {
		return err
	}
	le := binary.LittleEndian
	switch {
	case !bytes.Equal(h[:8], []byte("EFI PART")):
		return errors.New("no GPT signature at sector 1")
	case le.Uint32(h[8:]) != 0x00010000 || le.Uint32(h[12:]) != 92:
		return errors.New("unknown GPT header revision or size")
	case le.Uint64(h[24:]) != 1:
		return errors.New("the GPT header does not say it is at sector 1")
	}
	stored := le.Uint32(h[16:])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != stored {
		return errors.New("the GPT header checksum does not match")
	}
	first, count, entrySize := le.Uint64(h[72:]), le.Uint32(h[80:]), le.Uint32(h[84:])
	if entrySize != gpt.PartitionEntrySize || count == 0 || count > maxEntries {
		return fmt.Errorf("GPT entry array of %d entries of %d bytes (the appliance needs up to %d of %d)", count, entrySize, maxEntries, gpt.PartitionEntrySize)
	}
	arrayBytes := int64(count) * int64(entrySize)
	if first < 2 || first > uint64(size/SectorSize) || int64(first)*SectorSize+arrayBytes > size {
		return errors.New("the GPT entry array lies outside the disk")
	}
	entries := make([]byte, arrayBytes)
	if _, err := r.ReadAt(entries, int64(first)*SectorSize); err != nil {
		return err
	}
	if crc32.ChecksumIEEE(entries) != le.Uint32(h[88:]) {
		return errors.New("the GPT entry array checksum does not match")
	}
	return nil
}

func checkPartition(p *gpt.Partition, size int64) (Partition, error) {
	n := p.Index
	want := layout.PartitionName(n)
	if want == "" {
		return Partition{}, fmt.Errorf("partition %d (%q) is not in the appliance layout (%d partitions)", n, p.Name, layout.PartitionCount)
	}
	if p.Name != want {
		return Partition{}, fmt.Errorf("partition %d is named %q; the appliance layout names it %q", n, p.Name, want)
	}
	sectors := uint64(size / SectorSize)
	if p.Start < tableSectors || p.End < p.Start || p.End+tableSectors > sectors {
		return Partition{}, fmt.Errorf("partition %d (%s) lies outside the disk", n, want)
	}
	return Partition{Number: n, Name: want, Start: int64(p.Start) * SectorSize, Size: int64(p.End-p.Start+1) * SectorSize}, nil
}

func (t *Table) checkOverlaps() error {
	parts := make([]Partition, 0, len(t.Partitions))
	for _, p := range t.Partitions {
		parts = append(parts, p)
	}
	slices.SortFunc(parts, func(a, b Partition) int { return int(a.Start - b.Start) })
	for i := 1; i < len(parts); i++ {
		if parts[i-1].Start+parts[i-1].Size > parts[i].Start {
			return fmt.Errorf("partitions %d and %d overlap", parts[i-1].Number, parts[i].Number)
		}
	}
	return nil
}
