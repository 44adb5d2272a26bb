package imagefs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Extent is where a file of a FAT root directory keeps its bytes: Off
// (from the disk's start) and Size, and how many clusters its chain holds.
type Extent struct {
	Off, Size int64
	Clusters  int
}

// RootFileExtent finds the file whose 8.3 directory name is short (11
// bytes, space-padded upper case: "AUTOBOOTTXT") in the root directory of
// the FAT file system of size bytes at start, after checking its FAT as
// OpenFAT does. It lets a caller rewrite a file's bytes in place, one
// sector write, without go-diskfs rewriting the FAT.
func RootFileExtent(r io.ReaderAt, start, size int64, short string) (Extent, error) {
	g, err := readGeometry(r, start, size)
	if err != nil {
		return Extent{}, errors.New("not a FAT file system")
	}
	table := make([]byte, g.fatBytes)
	if _, err := r.ReadAt(table, start+g.fatStart); err != nil {
		return Extent{}, err
	}
	if err := checkChains(g, table); err != nil {
		return Extent{}, fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	root, err := g.rootDirectory(r, start, table)
	if err != nil {
		return Extent{}, err
	}
	for e := 0; e+32 <= len(root) && root[e] != 0; e += 32 {
		ent := root[e : e+32]
		if ent[0] == 0xe5 || ent[11] == 0x0f || ent[11]&0x18 != 0 || string(ent[:11]) != short {
			continue
		}
		le := binary.LittleEndian
		first := int64(le.Uint16(ent[20:]))<<16 | int64(le.Uint16(ent[26:]))
		if g.kind != fat32Kind {
			first &= 0xffff
		}
		if first < 2 || first > g.clusters+1 {
			return Extent{}, fmt.Errorf("%w: the directory entry of %s has no cluster", ErrDamaged, short)
		}
		n := 1
		for c := first; g.entry(table, c) < g.endMark(); c = int64(g.entry(table, c)) {
			n++ // checkChains bounds the walk
		}
		return Extent{Off: start + g.clusterOffset(first), Size: int64(le.Uint32(ent[28:])), Clusters: n}, nil
	}
	return Extent{}, fmt.Errorf("no %s in the root directory", short)
}

// clusterOffset is cluster c's offset from the file system's start.
func (g fatGeometry) clusterOffset(c int64) int64 {
	return g.dataStart + (c-2)*g.clusterBytes
}

// maxRootDir caps what is read of a FAT32 root directory.
const maxRootDir = 64 << 10

// rootDirectory reads the root directory: the fixed area of FAT12 and
// FAT16, or FAT32's root cluster chain.
func (g fatGeometry) rootDirectory(r io.ReaderAt, start int64, table []byte) ([]byte, error) {
	if g.kind != fat32Kind {
		dir := make([]byte, g.dataStart-g.rootStart)
		_, err := r.ReadAt(dir, start+g.rootStart)
		return dir, err
	}
	var dir []byte
	for c := g.rootCluster; ; c = int64(g.entry(table, c)) {
		if c < 2 || c > g.clusters+1 || int64(len(dir)) >= maxRootDir {
			return nil, fmt.Errorf("%w: the root directory's cluster chain", ErrDamaged)
		}
		buf := make([]byte, g.clusterBytes)
		if _, err := r.ReadAt(buf, start+g.clusterOffset(c)); err != nil {
			return nil, err
		}
		dir = append(dir, buf...)
		if g.entry(table, c) >= g.endMark() {
			return dir, nil
		}
	}
}
