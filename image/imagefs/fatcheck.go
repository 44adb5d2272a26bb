package imagefs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errChain is a FAT whose cluster chains a reader cannot follow to an end.
var errChain = errors.New("a cluster chain of the FAT")

// maxClusters caps the clusters checkFAT accepts: FAT32's 28-bit limit.
const maxClusters = 1 << 28

// fatKind is the FAT variant, told apart as the specification and
// go-diskfs do: no fixed root directory is FAT32, else fewer than 4085
// clusters is FAT12, else FAT16.
type fatKind int

const (
	fat12Kind fatKind = 12
	fat16Kind fatKind = 16
	fat32Kind fatKind = 32
)

// fatGeometry is what checkFAT reads of a FAT boot sector.
type fatGeometry struct {
	kind     fatKind
	fatStart int64 // byte offset of the first FAT from the file system's start
	fatBytes int64
	clusters int64 // data clusters, numbered 2 to clusters+1

	rootStart, dataStart, clusterBytes int64 // byte offsets and sizes from the file system's start
	rootCluster                        int64 // FAT32's first root directory cluster
}

// checkFAT reads the boot sector and the first FAT of the FAT file system
// of size bytes at start, and refuses it unless every cluster chain the
// table holds ends within the data area: no chain loops, leaves the
// cluster range, or runs into a free, reserved or bad cluster. go-diskfs
// follows a chain until its end mark without a bound, so a loop would make
// it allocate until the process dies; it reads the first FAT only, as
// this check does.
func checkFAT(r io.ReaderAt, start, size int64) (fatKind, error) {
	g, err := readGeometry(r, start, size)
	if err != nil {
		return 0, err
	}
	table := make([]byte, g.fatBytes)
	if _, err := r.ReadAt(table, start+g.fatStart); err != nil {
		return 0, err
	}
	return g.kind, checkChains(g, table)
}

func readGeometry(r io.ReaderAt, start, size int64) (fatGeometry, error) {
	var bs [SectorSize]byte
	if size < SectorSize {
		return fatGeometry{}, errors.New("too small for a FAT file system")
	}
	if _, err := r.ReadAt(bs[:], start); err != nil {
		return fatGeometry{}, err
	}
	le := binary.LittleEndian
	bps, spc := int64(le.Uint16(bs[11:])), int64(bs[13])
	reserved, nfats, rootEntries := int64(le.Uint16(bs[14:])), int64(bs[16]), int64(le.Uint16(bs[17:]))
	total, fatSectors := int64(le.Uint16(bs[19:])), int64(le.Uint16(bs[22:]))
	if total == 0 {
		total = int64(le.Uint32(bs[32:]))
	}
	kind := fat16Kind
	if rootEntries == 0 {
		kind, fatSectors = fat32Kind, int64(le.Uint32(bs[36:]))
	}
	if bps != SectorSize || spc == 0 || spc&(spc-1) != 0 || reserved == 0 || nfats == 0 || fatSectors == 0 {
		return fatGeometry{}, errors.New("not a FAT file system of 512-byte sectors")
	}
	rootSectors := (rootEntries*32 + bps - 1) / bps
	data := total - reserved - nfats*fatSectors - rootSectors
	if total*bps > size || data < spc {
		return fatGeometry{}, errors.New("the FAT file system's sizes do not fit its partition")
	}
	g := fatGeometry{kind: kind, fatStart: reserved * bps, fatBytes: fatSectors * bps, clusters: data / spc,
		rootStart:    (reserved + nfats*fatSectors) * bps,
		dataStart:    (reserved + nfats*fatSectors + rootSectors) * bps,
		clusterBytes: spc * bps,
		rootCluster:  int64(le.Uint32(bs[44:]) & 0x0fffffff)}
	if kind == fat16Kind && g.clusters < 4085 {
		g.kind = fat12Kind
	}
	if g.clusters > maxClusters || (g.clusters+2)*int64(g.kind)/8+1 > g.fatBytes {
		return fatGeometry{}, errors.New("the FAT is too small for the file system's clusters")
	}
	return g, nil
}

// entry is the table's value for cluster c.
func (g fatGeometry) entry(table []byte, c int64) uint32 {
	le := binary.LittleEndian
	switch g.kind {
	case fat12Kind:
		v := uint32(le.Uint16(table[c*3/2:]))
		if c%2 == 1 {
			return v >> 4
		}
		return v & 0xfff
	case fat16Kind:
		return uint32(le.Uint16(table[2*c:]))
	}
	return le.Uint32(table[4*c:]) & 0x0fffffff
}

// endMark is the smallest end-of-chain value; one below it marks a bad
// cluster.
func (g fatGeometry) endMark() uint32 {
	switch g.kind {
	case fat12Kind:
		return 0xff8
	case fat16Kind:
		return 0xfff8
	}
	return 0x0ffffff8
}

// checkChains walks every chain once (each cluster is settled the first
// time a walk reaches it), so the check is linear in the cluster count.
func checkChains(g fatGeometry, table []byte) error {
	const (
		unseen = iota
		onPath
		settled
	)
	state := make([]uint8, g.clusters+2)
	last := g.clusters + 1
	var path []int64
	for first := int64(2); first <= last; first++ {
		if e := g.entry(table, first); state[first] != unseen || e == 0 || e == g.endMark()-1 {
			continue // settled, free, or a bad cluster outside any chain
		}
		path = path[:0]
		for c := first; ; {
			state[c] = onPath
			path = append(path, c)
			next := g.entry(table, c)
			if next >= g.endMark() {
				break
			}
			if next < 2 || int64(next) > last || g.entry(table, int64(next)) == 0 {
				return fmt.Errorf("%w leads from cluster %d to %d, which no chain may hold", errChain, c, next)
			}
			if state[next] == onPath {
				return fmt.Errorf("%w loops (cluster %d leads back into it)", errChain, c)
			}
			if state[next] == settled {
				break
			}
			c = int64(next)
		}
		for _, c := range path {
			state[c] = settled
		}
	}
	return nil
}
