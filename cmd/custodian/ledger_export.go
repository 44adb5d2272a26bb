package main

import (
	"context"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/transparency-dev/formats/log"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
)

func newLedgerExportCommand(g *globals) *cobra.Command {
	remote := remoteLedger{g: g}
	cmd := &cobra.Command{
		Use:   "export DIR",
		Short: "Write the ledger as static C2SP tlog-tiles files (checkpoint, tiles, entry bundles) for any web server",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if remote.enabled() {
				src, err := remote.tiles(cmd.Context())
				if err != nil {
					return err
				}
				st, err := ledger.ExportFrom(dir, src)
				if err != nil {
					return err
				}
				g.printf("exported the ledger of %s (size %d) to %s: %d files written, %d already there\n", src.cp.Origin, st.Size, dir, st.Written, st.Kept)
				return nil
			}
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				if a.SignerErr != nil {
					return keyHint(a.SignerErr)
				}
				st, err := a.Ledger.Export(dir)
				if err != nil {
					return err
				}
				g.printf("exported the ledger of %s (size %d) to %s: %d files written, %d already there\n", a.ID, st.Size, dir, st.Written, st.Kept)
				return nil
			})
		},
	}
	remote.flags(cmd)
	return cmd
}

// remoteTiles is a running appliance's /v1/tlog/ as a ledger.TileSource,
// every tile checked against the checkpoint the pinned key signed before
// it is written anywhere: hash tiles through x/mod's tlog.TileHashReader,
// which checks each tile it loads against the tree, and entry bundles
// entry by entry against the checked level-0 hashes.
type remoteTiles struct {
	ctx    context.Context
	c      *apiClient
	prefix string // the log's path on the server, ending in /
	signed []byte
	cp     *log.Checkpoint
	tree   tlog.Tree
	hashes tlog.HashReader
	cache  map[tlog.Tile][]byte // hash tiles fetched, for the hash reader's repeated reads
	failed error                // the last fetch's error, which the hash reader does not keep
}

// tiles fetches and verifies the checkpoint and returns the log it signs.
func (r *remoteLedger) tiles(ctx context.Context) (*remoteTiles, error) {
	signed, key, err := r.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	cp, err := ledger.VerifyCheckpoint(signed, key)
	if err != nil {
		return nil, err
	}
	return newRemoteTiles(ctx, r.c, release.TlogPrefix, signed, cp), nil
}

// newRemoteTiles reads the tiles of the tree cp, a checkpoint already
// verified, from the log at prefix on c's server.
func newRemoteTiles(ctx context.Context, c *apiClient, prefix string, signed []byte, cp *log.Checkpoint) *remoteTiles {
	src := &remoteTiles{ctx: ctx, c: c, prefix: prefix, signed: signed, cp: cp, cache: map[tlog.Tile][]byte{},
		tree: tlog.Tree{N: int64(cp.Size), Hash: tlog.Hash(cp.Hash)}}
	src.hashes = tlog.TileHashReader(src.tree, src)
	return src
}

// Caps on what a tile server may send: a hash tile is 256 hashes, an entry
// bundle 256 entries of at most 4 KiB after their lengths.
const (
	maxHashTile = 256 * tlog.HashSize
	maxBundle   = 256 * (2 + 4096)
	// maxCachedTiles bounds the hash tiles kept between reads (8 MiB):
	// past it the cache starts afresh, and the few tiles still needed are
	// fetched again.
	maxCachedTiles = 1024
)

// fetchError is a tile or checkpoint that could not be fetched: the
// server or the network failed, which says nothing about the log.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// get fetches path under the log's prefix, at most max bytes.
func (s *remoteTiles) get(path string, max int64) ([]byte, error) {
	return fetchCapped(s.ctx, s.c, s.prefix+path, max)
}

func fetchCapped(ctx context.Context, c *apiClient, path string, max int64) ([]byte, error) {
	out := capped{max: max}
	if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
		return nil, &fetchError{err}
	}
	return out.data, nil
}

func (s *remoteTiles) Checkpoint() ([]byte, *log.Checkpoint, error) { return s.signed, s.cp, nil }

// Tile returns t's bytes once they are checked to be the signed tree's.
func (s *remoteTiles) Tile(t tlog.Tile) ([]byte, error) {
	if t.L >= 0 {
		hs, err := s.tileHashes(t.L*ledger.TileHeight, t)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 0, len(hs)*tlog.HashSize)
		for _, h := range hs {
			out = append(out, h[:]...)
		}
		return out, nil
	}
	data, err := s.get(ledger.TilePath(t), maxBundle)
	if err != nil {
		return nil, err
	}
	entries, err := ledger.SplitBundle(data, t.W)
	if err != nil {
		return nil, fmt.Errorf("the server's %s: %w", ledger.TilePath(t), err)
	}
	leaves, err := s.tileHashes(0, t)
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		if tlog.RecordHash(e) != leaves[i] {
			return nil, fmt.Errorf("entry %d of the server's %s is not in the tree its checkpoint signs; nothing of it was written", t.N<<ledger.TileHeight+int64(i), ledger.TilePath(t))
		}
	}
	return data, nil
}

// tileHashes reads the W hashes t spans, at level, through the checking
// hash reader.
func (s *remoteTiles) tileHashes(level int, t tlog.Tile) ([]tlog.Hash, error) {
	idx := make([]int64, t.W)
	for i := range idx {
		idx[i] = tlog.StoredHashIndex(level, t.N<<ledger.TileHeight+int64(i))
	}
	s.failed = nil
	hs, err := s.hashes.ReadHashes(idx)
	switch {
	case s.failed != nil:
		return nil, s.failed
	case err != nil:
		return nil, fmt.Errorf("the server's hash tiles are not the tree its checkpoint signs (%s and the tiles above it); nothing of them was written", ledger.TilePath(t))
	}
	return hs, nil
}

func (s *remoteTiles) TreeHash(n int64) (tlog.Hash, error) { return tlog.TreeHash(n, s.hashes) }

// Height, ReadTiles and SaveTiles make remoteTiles the tlog.TileReader
// behind the checking hash reader.
func (s *remoteTiles) Height() int { return ledger.TileHeight }

func (s *remoteTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := s.fetch(t)
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (s *remoteTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// fetch gets a hash tile as the server sends it, once.
func (s *remoteTiles) fetch(t tlog.Tile) ([]byte, error) {
	if data, ok := s.cache[t]; ok {
		return data, nil
	}
	data, err := s.get(ledger.TilePath(t), maxHashTile)
	if err != nil {
		s.failed = err
		return nil, err
	}
	if len(s.cache) >= maxCachedTiles {
		clear(s.cache)
	}
	s.cache[t] = data
	return data, nil
}
