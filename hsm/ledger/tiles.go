package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
)

// The ledger as a C2SP tlog-tiles log (docs/ledger.md, "Tiles"): the
// signed checkpoint, the Merkle tree as tiles of 256 hashes, and the
// entries as bundles of 256. A tile's path names its content for good: the
// tree only grows, so a tile, full or partial, never changes once the tree
// holds it. That is what lets anyone cache, copy and serve it.

// TileHeight is the C2SP tlog-tiles tile height: 2^8 = 256 hashes or
// entries per full tile.
const TileHeight = 8

const tileWidth = 1 << TileHeight

// ErrTileBeyondTree is a well-formed tile the ledger does not hold (yet):
// a tile server answers it with 404.
var ErrTileBeyondTree = errors.New("the ledger holds no such tile")

// errBadTilePath names the one form a tile path takes.
var errBadTilePath = errors.New("not a tile path: want tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>] as C2SP tlog-tiles writes them (e.g. tile/0/x001/234, tile/entries/000.p/7)")

// maxTilePath caps a path before it is split: the longest valid one
// (tile/entries/ with 7 groups for an int64 index, .p/255) is 50 bytes.
const maxTilePath = 64

// ParseTilePath parses a C2SP tlog-tiles path, such as tile/0/x001/234 or
// tile/entries/000.p/7, into its tile (L is -1 for an entry bundle). It
// accepts one canonical form only: the one TilePath writes.
func ParseTilePath(path string) (tlog.Tile, error) {
	if len(path) > maxTilePath {
		return tlog.Tile{}, errBadTilePath
	}
	// The sumdb layout is C2SP's with the height after "tile/" and "data"
	// for "entries"; x/mod parses it strictly (it re-renders the tile and
	// compares, so there is one spelling per tile).
	var sumdb string
	if rest, ok := strings.CutPrefix(path, "tile/entries/"); ok {
		sumdb = "tile/8/data/" + rest
	} else if rest, ok := strings.CutPrefix(path, "tile/"); ok && !strings.HasPrefix(rest, "data/") {
		sumdb = "tile/8/" + rest
	} else {
		return tlog.Tile{}, errBadTilePath
	}
	t, err := tlog.ParseTilePath(sumdb)
	if err != nil || t.H != TileHeight || t.L > 63 { // C2SP levels are 0..63
		return tlog.Tile{}, errBadTilePath
	}
	return t, nil
}

// TilePath is t's C2SP tlog-tiles path, relative to the log's prefix.
func TilePath(t tlog.Tile) string {
	if t.L == -1 {
		return "tile/entries/" + strings.TrimPrefix(t.Path(), "tile/8/data/")
	}
	return "tile/" + strings.TrimPrefix(t.Path(), "tile/8/")
}

// Tile returns a tile's bytes: for a hash tile its W hashes (x/mod's
// tlog.ReadTileData over the stored hashes), for an entry bundle (L -1) its
// W entries, each after its length as a big-endian uint16. A tile that
// reaches past the ledger's size is ErrTileBeyondTree. At most 256 hashes
// or entries are read, whatever the tile asks.
func (l *Ledger) Tile(t tlog.Tile) ([]byte, error) {
	if t.H != TileHeight || t.W < 1 || t.W > tileWidth || t.L < -1 || t.L > 63 || t.N < 0 {
		return nil, errBadTilePath
	}
	var out []byte
	err := l.view(func(tx *bolt.Tx) error {
		if !holds(l.sizeIn(tx), t) {
			return fmt.Errorf("%w: %s", ErrTileBeyondTree, TilePath(t))
		}
		var err error
		if t.L == -1 {
			out, err = entryBundle(tx, t)
		} else {
			out, err = tlog.ReadTileData(t, txHashReader{tx})
		}
		return err
	})
	return out, err
}

// holds reports whether a tree of size entries holds all of t: the hashes
// t spans, at level 8L, are the first size>>8L of that level.
func holds(size int64, t tlog.Tile) bool {
	level := max(t.L, 0) * TileHeight
	if level >= 63 {
		return false
	}
	have := size >> level
	// t.N*256 + t.W <= have, without overflow for a huge N.
	return t.N <= (have-int64(t.W))/tileWidth && have >= int64(t.W)
}

// entryBundle reads entries N*256 .. N*256+W-1 with one cursor.
func entryBundle(tx *bolt.Tx, t tlog.Tile) ([]byte, error) {
	first := uint64(t.N) * tileWidth
	c := tx.Bucket(bucketEntries).Cursor()
	var out []byte
	k, v := c.Seek(u64(first))
	for i := range uint64(t.W) {
		if k == nil || binary.BigEndian.Uint64(k) != first+i {
			return nil, fmt.Errorf("ledger entry %d is missing", first+i)
		}
		// Entries are at most maxEntrySize (4 KiB), well within uint16.
		out = binary.BigEndian.AppendUint16(out, uint16(len(v)))
		out = append(out, v...)
		k, v = c.Next()
	}
	return out, nil
}

// tilesOf lists the tiles a client needs for a tree of size n, entry
// bundles included: every full tile, and the partial tile at each level
// where n leaves one.
func tilesOf(n int64) []tlog.Tile {
	tiles := tlog.NewTiles(TileHeight, 0, n)
	for _, t := range tiles {
		if t.L == 0 {
			data := t
			data.L = -1
			tiles = append(tiles, data)
		}
	}
	return tiles
}

// errBadBundle is an entry bundle that does not split into its entries.
var errBadBundle = errors.New("not an entry bundle of this ledger: want each entry (at most 4 KiB) after its length as a big-endian uint16, as many as the tile's width, nothing after")

// SplitBundle splits an entry bundle of w entries (C2SP tlog-tiles): each
// entry after its length as a big-endian uint16. It refuses any other
// count, an entry longer than a ledger entry can be, and trailing bytes.
// The entries share data's memory.
func SplitBundle(data []byte, w int) ([][]byte, error) {
	if w < 1 || w > tileWidth {
		return nil, errBadBundle
	}
	entries := make([][]byte, 0, w)
	for len(data) > 0 {
		if len(data) < 2 || len(entries) == w {
			return nil, errBadBundle
		}
		n := int(binary.BigEndian.Uint16(data))
		if n > maxEntrySize || len(data)-2 < n {
			return nil, errBadBundle
		}
		entries = append(entries, data[2:2+n:2+n])
		data = data[2+n:]
	}
	if len(entries) != w {
		return nil, errBadBundle
	}
	return entries, nil
}
