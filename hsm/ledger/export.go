package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/transparency-dev/formats/log"

	"github.com/custodian-project/custodian/hsm/durable"
)

// ErrOtherLog refuses an export into a directory that holds another log's
// tiles, or another history of this one: nothing there is overwritten.
var ErrOtherLog = errors.New("the directory holds another log's tiles")

// ExportStats says what an export did.
type ExportStats struct {
	Size    int64 // the tree size of the checkpoint written
	Written int   // files written
	Kept    int   // files already there with the same bytes
}

// A TileSource is a tlog-tiles log to export: this ledger, or a copy read
// from a running appliance and checked against the key its reader pinned.
type TileSource interface {
	// Checkpoint is the signed checkpoint to publish, and what it says.
	Checkpoint() ([]byte, *log.Checkpoint, error)
	// Tile is t's bytes in the checkpoint's tree.
	Tile(t tlog.Tile) ([]byte, error)
	// TreeHash is the root hash of the tree's first n entries (n at most
	// the checkpoint's size).
	TreeHash(n int64) (tlog.Hash, error)
}

// Export writes the ledger into dir as a static C2SP tlog-tiles log
// (ExportFrom).
func (l *Ledger) Export(dir string) (ExportStats, error) {
	return ExportFrom(dir, ledgerTiles{l})
}

// ExportFrom writes a log into dir as a static C2SP tlog-tiles log: the
// files a web server serves as they are at <prefix>/checkpoint,
// <prefix>/tile/... and <prefix>/tile/entries/..., the same bytes the
// daemon serves under /v1/tlog/.
//
// Each file is written durably (a temporary file, fsynced, renamed, the
// directory fsynced), every tile before the checkpoint, so a reader never
// finds a checkpoint whose tiles are missing. It is idempotent: a tile
// already there with the same bytes is kept, and running it again writes
// nothing new for a log that did not grow. Before writing anything it
// refuses (ErrOtherLog) a directory whose checkpoint is another log's or
// not a prefix of this one (a fork: keep it as evidence), or where a tile
// it would write holds other bytes. Partial tiles of earlier exports stay:
// they are still this log's.
func ExportFrom(dir string, src TileSource) (ExportStats, error) {
	signed, cp, err := src.Checkpoint()
	if err != nil {
		return ExportStats{}, err
	}
	st := ExportStats{Size: int64(cp.Size)}
	if err := checkExportDir(dir, src, cp); err != nil {
		return st, err
	}
	tiles := tilesOf(st.Size)
	// Check every tile already there first, so that a refusal leaves
	// the directory as it was.
	var missing []tlog.Tile
	for _, t := range tiles {
		same, err := sameTile(dir, src, t)
		if err != nil {
			return st, err
		}
		if same {
			st.Kept++
		} else {
			missing = append(missing, t)
		}
	}
	for _, t := range missing {
		data, err := src.Tile(t)
		if err != nil {
			return st, err
		}
		if err := writePublic(filepath.Join(dir, filepath.FromSlash(TilePath(t))), data); err != nil {
			return st, err
		}
		st.Written++
	}
	cpPath := filepath.Join(dir, "checkpoint")
	if old, err := readCapped(cpPath, MaxCheckpointSize); err == nil && bytes.Equal(old, signed) {
		st.Kept++ // the same tree: Ed25519 signs it the same way again
		return st, nil
	}
	if err := writePublic(cpPath, signed); err != nil {
		return st, err
	}
	st.Written++
	return st, nil
}

// ledgerTiles is the ledger as a TileSource.
type ledgerTiles struct{ l *Ledger }

func (s ledgerTiles) Checkpoint() ([]byte, *log.Checkpoint, error) { return s.l.signedCheckpoint() }
func (s ledgerTiles) Tile(t tlog.Tile) ([]byte, error)             { return s.l.Tile(t) }

func (s ledgerTiles) TreeHash(n int64) (tlog.Hash, error) {
	var root tlog.Hash
	err := s.l.db.View(func(tx *bolt.Tx) error {
		var err error
		root, err = tlog.TreeHash(n, txHashReader{tx})
		return err
	})
	return root, err
}

// sameTile reports whether t's file in dir exists and holds t's bytes. A
// file with other bytes is another log's.
func sameTile(dir string, src TileSource, t tlog.Tile) (bool, error) {
	path := filepath.Join(dir, filepath.FromSlash(TilePath(t)))
	have, err := readCapped(path, tileWidth*(2+maxEntrySize))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	want, err := src.Tile(t)
	if err != nil {
		return false, err
	}
	if !bytes.Equal(have, want) {
		return false, fmt.Errorf("%w: %s is not this log's; export into an empty directory", ErrOtherLog, path)
	}
	return true, nil
}

// checkExportDir accepts an empty or new directory, or one whose
// checkpoint is this log's at a size it still extends.
func checkExportDir(dir string, src TileSource, now *log.Checkpoint) error {
	path := filepath.Join(dir, "checkpoint")
	data, err := readCapped(path, MaxCheckpointSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	old, err := unverifiedCheckpoint(data)
	if err != nil {
		return fmt.Errorf("%w: %s is not a checkpoint of this log (%v); export into an empty directory", ErrOtherLog, path, err)
	}
	if old.Origin != now.Origin {
		return fmt.Errorf("%w: %s is a checkpoint of %q, not of %q; export into an empty directory", ErrOtherLog, path, old.Origin, now.Origin)
	}
	if old.Size > now.Size {
		return fmt.Errorf("%w: %s holds %d entries, this log %d: it was exported from a newer copy; export into an empty directory", ErrOtherLog, path, old.Size, now.Size)
	}
	root, err := src.TreeHash(int64(old.Size))
	if err != nil {
		return err
	}
	if !bytes.Equal(root[:], old.Hash) {
		return fmt.Errorf("%w: %s is another history of this log at %d entries (a fork: keep it as evidence); export into an empty directory", ErrOtherLog, path, old.Size)
	}
	return nil
}

// unverifiedCheckpoint reads a signed checkpoint's text without its
// signatures: what export compares is the tree itself, entry for entry.
func unverifiedCheckpoint(signed []byte) (*log.Checkpoint, error) {
	n, err := note.Open(signed, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if errors.As(err, &unverified) {
		n, err = unverified.Note, nil
	}
	if err != nil {
		return nil, errors.New("not a signed note")
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal([]byte(n.Text)); err != nil || len(cp.Hash) != tlog.HashSize {
		return nil, errors.New("not a C2SP checkpoint")
	}
	return &cp, nil
}

// readCapped reads a regular file of at most limit bytes.
func readCapped(path string, limit int64) ([]byte, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() || info.Size() > limit {
		return nil, fmt.Errorf("%w: %s is not a tile or checkpoint file (not a regular file, or too large); export into an empty directory", ErrOtherLog, path)
	}
	return os.ReadFile(path)
}

// writePublic writes a published file durably, readable by everyone.
func writePublic(path string, data []byte) error {
	if err := durable.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return durable.WriteFile(path, data, 0o644)
}
