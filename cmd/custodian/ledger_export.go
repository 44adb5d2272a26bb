package main

import (
	"context"
	"errors"
	"fmt"

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
				var lie *notTheSignedLog
				if errors.As(err, &lie) {
					return withHint(err, "keep "+dir+" as it is and report it to the appliance's operator; the files already written were checked")
				}
				if err != nil {
					return err
				}
				printExport(g, src.cp.Origin, dir, st)
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
				printExport(g, a.ID, dir, st)
				return nil
			})
		},
	}
	remote.flags(cmd)
	return cmd
}

// printExport says what an export did.
func printExport(g *globals, log, dir string, st ledger.ExportStats) {
	g.printf("exported the ledger of %s (size %d) to %s: %d files written, %d already there", log, st.Size, dir, st.Written, st.Kept)
	if st.Removed > 0 {
		g.printf(", %d temporary files of an interrupted export removed", st.Removed)
	}
	g.printf("\n")
}

// remoteTiles is a running appliance's /v1/tlog/ as a ledger.TileSource,
// every tile checked against the checkpoint the pinned key signed before
// it is written anywhere: hash tiles through x/mod's tlog.TileHashReader,
// which checks each tile it loads against the tree, and entry bundles
// entry by entry against the checked level-0 hashes. Tiles already in the
// export directory are read from there and checked the same way, so a
// mirror that follows the log fetches only what is new; only if they do
// not check are they fetched from the server (and the export then
// refuses the directory's copy).
type remoteTiles struct {
	ctx    context.Context
	c      *apiClient
	prefix string // the log's path on the server, ending in /
	signed []byte
	cp     *log.Checkpoint
	tree   tlog.Tree
	hashes tlog.HashReader
	source string                          // how messages name where tiles come from: "the server"
	local  func(tlog.Tile) ([]byte, error) // the export directory's tiles (nil: none)
	cache  map[tlog.Tile][]byte            // hash tiles the hash reader checked, for its repeated reads
	failed error                           // the last fetch's error, which the hash reader does not keep
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
	src := &remoteTiles{ctx: ctx, c: c, prefix: prefix, signed: signed, cp: cp, source: "the server", cache: map[tlog.Tile][]byte{},
		tree: tlog.Tree{N: int64(cp.Size), Hash: tlog.Hash(cp.Hash)}}
	src.hashes = tlog.TileHashReader(src.tree, src)
	return src
}

// maxCachedTiles bounds the checked hash tiles kept between reads (8 MiB):
// past it the cache starts afresh, and the few tiles still needed are
// fetched again.
const maxCachedTiles = 1024

// fetchError is a tile or checkpoint that could not be fetched: the
// server or the network failed, which says nothing about the log.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

// fetchCapped GETs path, at most max bytes. A failed request is a
// *fetchError; an answer larger than max is errTooLarge, which is the
// server's doing, not the network's.
func fetchCapped(ctx context.Context, c *apiClient, path string, max int64) ([]byte, error) {
	var data []byte
	err := c.getCapped(ctx, path, max, &data)
	if err != nil && !errors.Is(err, errTooLarge) {
		return nil, &fetchError{err}
	}
	return data, err
}

func (s *remoteTiles) Checkpoint() ([]byte, *log.Checkpoint, error) { return s.signed, s.cp, nil }

// UseLocal makes s read tiles from the export directory first.
func (s *remoteTiles) UseLocal(read func(tlog.Tile) ([]byte, error)) { s.local = read }

// notTheSignedLog is tiles that do not check against the checkpoint
// signed with the log's key: whoever served them does not hold that log.
type notTheSignedLog struct{ what string }

func (e *notTheSignedLog) Error() string { return e.what }

// notTheLog says which of s's tiles do not check.
func (s *remoteTiles) notTheLog(format string, args ...any) error {
	return &notTheSignedLog{fmt.Sprintf(format, args...) + ": " + s.source + " does not hold the log its key signs"}
}

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
	leaves, err := s.tileHashes(0, t)
	if err != nil {
		return nil, err
	}
	if s.local != nil {
		if data, err := s.local(t); err == nil && s.checkBundle(data, t, leaves) == nil {
			return data, nil
		}
	}
	data, err := s.get(t)
	if err != nil {
		return nil, err
	}
	if err := s.checkBundle(data, t, leaves); err != nil {
		return nil, err
	}
	return data, nil
}

// checkBundle checks a bundle's entries against the tree's level-0
// hashes.
func (s *remoteTiles) checkBundle(data []byte, t tlog.Tile, leaves []tlog.Hash) error {
	entries, err := ledger.SplitBundle(data, t.W)
	if err != nil {
		return s.notTheLog("%s's %s: %v", s.source, ledger.TilePath(t), err)
	}
	for i, e := range entries {
		if tlog.RecordHash(e) != leaves[i] {
			return s.notTheLog("entry %d of %s's %s is not in the tree its checkpoint signs", t.N<<ledger.TileHeight+int64(i), s.source, ledger.TilePath(t))
		}
	}
	return nil
}

// tileHashes reads the W hashes t spans, at level, through the checking
// hash reader. When tiles from the export directory do not check, it
// reads them again from the server alone.
func (s *remoteTiles) tileHashes(level int, t tlog.Tile) ([]tlog.Hash, error) {
	idx := make([]int64, t.W)
	for i := range idx {
		idx[i] = tlog.StoredHashIndex(level, t.N<<ledger.TileHeight+int64(i))
	}
	s.failed = nil
	hs, err := s.hashes.ReadHashes(idx)
	if err != nil && s.failed == nil && s.local != nil {
		s.local = nil // the directory's tiles are not this tree's: the export refuses them
		hs, err = s.hashes.ReadHashes(idx)
	}
	switch {
	case s.failed != nil:
		return nil, s.failed
	case err != nil:
		return nil, s.notTheLog("%s's hash tiles are not the tree its checkpoint signs (%s and the tiles above it)", s.source, ledger.TilePath(t))
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

// SaveTiles keeps the tiles the hash reader checked: only those are
// cached, so a server's junk is dropped as soon as it is refused.
func (s *remoteTiles) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	if len(s.cache)+len(tiles) > maxCachedTiles {
		clear(s.cache)
	}
	for i, t := range tiles {
		s.cache[t] = data[i]
	}
}

// fetch gets a hash tile: checked already, from the export directory, or
// from the server.
func (s *remoteTiles) fetch(t tlog.Tile) ([]byte, error) {
	if data, ok := s.cache[t]; ok {
		return data, nil
	}
	if s.local != nil {
		if data, err := s.local(t); err == nil {
			return data, nil
		}
	}
	data, err := s.get(t)
	if err != nil {
		s.failed = err
	}
	return data, err
}

// get reads t from the server, at most as many bytes as t can hold.
func (s *remoteTiles) get(t tlog.Tile) ([]byte, error) {
	data, err := fetchCapped(s.ctx, s.c, s.prefix+ledger.TilePath(t), ledger.MaxTileSize(t))
	if errors.Is(err, errTooLarge) {
		return nil, s.notTheLog("%s's %s is larger than a tile can be (%d bytes)", s.source, ledger.TilePath(t), ledger.MaxTileSize(t))
	}
	return data, err
}
