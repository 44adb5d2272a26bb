package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/hsm/durable"
)

// bbolt's file, as far as bolt.Open reads it before it returns (format
// version 2, in the machine's byte order; bbolt exports none of it): pages
// of the size its meta page gives, each headed by its ID (8 bytes), flags
// (2), count (2) and overflow (4: the pages that follow it). Pages 0 and 1
// are meta pages: after the header, magic (4), version (4), page size (4),
// flags (4), root bucket (16), free-list page (8), high water mark (8: the
// first page past the data), transaction ID (8) and the FNV-64a of the 56
// bytes before it. bbolt opens the valid meta of higher transaction ID and
// reads the free list it names: a page with flags 0x10 listing count page
// IDs (8 bytes each, sorted), count 0xFFFF saying the first of them is the
// count.
const (
	boltPageHeader   = 16
	boltMetaSummed   = 56
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltFreelistFlag = 0x10
	boltMaxPageSize  = 16 << 20 // the largest bbolt looks for
)

type boltMeta struct{ pageSize, freelist, high, txid uint64 }

// checkIndexFile reads the pages bolt.Open reads of a clean ledger.db
// (its meta pages and free list) with plain reads, and refuses a damaged
// one (ErrUnreadable) before bbolt maps it: bbolt panics on a damaged free
// list inside bolt.Open, and the file it opened, locked and mapped would
// then stay open, its blocks taken, for the process's life. It reads the
// meta page bbolt would use (of the two whose checksum holds, the one of
// the higher transaction; the second at the system's page size when the
// first does not check) and the free list it names, and it is stricter
// than bbolt: a meta page naming a page size bbolt does not write, a
// second meta page of another page size, a free list not synced (this
// package always syncs it), out of order or naming pages past the data
// are refused. A clean index it refuses is only rebuilt. What it does not
// catch, guarded still recovers from.
func checkIndexFile(path string) error {
	f, err := durable.OpenRegular(path, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	// Shared, as bbolt's own read-only open: a writer holds it exclusively.
	if err := lockFile(f, unix.LOCK_SH); errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%w (%s stayed locked for 2 seconds)", ErrInUse, path)
	} else if err != nil {
		return err
	}
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if why := checkBoltPages(f, uint64(info.Size())); why != "" {
		return fmt.Errorf("%w (%s: %s)", ErrUnreadable, FileName, why)
	}
	return nil
}

// checkBoltPages says what is wrong with the meta pages or the free list
// of the bbolt file f of size bytes, or returns "".
func checkBoltPages(f io.ReaderAt, size uint64) string {
	// bbolt takes a meta page whose checksum holds, whatever its page
	// size says, and the one of the higher transaction: one it would take
	// that names a page size it cannot have written is refused here.
	m, ok := readBoltMeta(f, 0)
	pageSize := m.pageSize
	if !ok {
		pageSize = uint64(os.Getpagesize())
	} else if !plausiblePageSize(pageSize) {
		return "its first meta page names a page size bbolt does not write"
	}
	if m1, ok1 := readBoltMeta(f, pageSize); ok1 {
		if m1.pageSize != pageSize {
			return "its second meta page names another page size"
		}
		if !ok || m1.txid > m.txid {
			m, ok = m1, true
		}
	}
	if !ok {
		return "neither of its meta pages checks"
	}
	if m.freelist < 2 || m.freelist >= m.high || m.freelist >= size/m.pageSize {
		return "its meta page names no free-list page of it"
	}
	var head [boltPageHeader + 8]byte
	at := m.freelist * m.pageSize
	if _, err := f.ReadAt(head[:], int64(at)); err != nil {
		return "its free list cannot be read"
	}
	ne := binary.NativeEndian
	count, ids := uint64(ne.Uint16(head[10:])), at+boltPageHeader
	if count == 0xFFFF {
		count, ids = ne.Uint64(head[boltPageHeader:]), ids+8
	}
	end := at + (uint64(ne.Uint32(head[12:]))+1)*m.pageSize
	if ne.Uint16(head[8:]) != boltFreelistFlag || end > size || count > (end-ids)/8 {
		return "its free list is damaged"
	}
	list := make([]byte, count*8)
	if _, err := f.ReadAt(list, int64(ids)); err != nil {
		return "its free list cannot be read"
	}
	for prev, i := uint64(1), 0; i < len(list); i += 8 {
		id := ne.Uint64(list[i:])
		if id <= prev || id >= m.high {
			return "its free list names pages that are not free pages of it"
		}
		prev = id
	}
	return ""
}

// readBoltMeta reads the meta page at off, if it checks.
func readBoltMeta(f io.ReaderAt, off uint64) (m boltMeta, ok bool) {
	var page [boltPageHeader + boltMetaSummed + 8]byte
	if _, err := f.ReadAt(page[:], int64(off)); err != nil {
		return m, false
	}
	meta, ne := page[boltPageHeader:], binary.NativeEndian
	h := fnv.New64a()
	h.Write(meta[:boltMetaSummed])
	if ne.Uint32(meta) != boltMagic || ne.Uint32(meta[4:]) != boltVersion || ne.Uint64(meta[boltMetaSummed:]) != h.Sum64() {
		return m, false
	}
	m.pageSize, m.freelist, m.high, m.txid = uint64(ne.Uint32(meta[8:])), ne.Uint64(meta[32:]), ne.Uint64(meta[40:]), ne.Uint64(meta[48:])
	return m, true
}

// plausiblePageSize: a page size bbolt could have written, a power of two
// of those it looks for.
func plausiblePageSize(size uint64) bool {
	return size >= 1024 && size <= boltMaxPageSize && size&(size-1) == 0
}
