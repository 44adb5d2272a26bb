package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/transparency-dev/formats/log"

	"github.com/custodian-project/custodian/hsm/durable"
)

// ErrOtherLog refuses an export into a directory that holds another log's
// tiles or checkpoint: nothing there is overwritten.
var ErrOtherLog = errors.New("the directory holds another log's tiles")

// ErrNotExport refuses an export into a directory that holds something
// other than a tlog-tiles export where the export writes: a symbolic link,
// a file where a directory goes, a file that is no tile.
var ErrNotExport = errors.New("the directory holds something other than a tlog-tiles export")

// ErrHistoryChanged refuses an export of a tree that does not extend the
// one the directory already published: the log's ledger went back or
// forked. The directory is the evidence and is kept as it is.
var ErrHistoryChanged = errors.New("the log no longer extends what this directory published")

// ErrExportRunning refuses a second export into a directory while one
// runs: each holds the directory's lock file for its whole run.
var ErrExportRunning = errors.New("another export into the directory is running")

// exportLock is the lock file in DIR that one export holds at a time. A
// web server need not serve it.
const exportLock = ".export.lock"

// ExportStats says what an export did.
type ExportStats struct {
	Size    int64 // the tree size of the checkpoint written
	Written int   // files written
	Kept    int   // files already there with the same bytes
	Removed int   // temporary files an interrupted export had left
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

// A LocalTileSource is a TileSource that can check the tiles already in
// the export directory against its tree instead of fetching them again.
// ExportFrom gives it read, which returns a tile's bytes in the directory
// (fs.ErrNotExist when there is none). Whatever it returns from Tile it
// must still have checked against the tree.
type LocalTileSource interface {
	TileSource
	UseLocal(read func(tlog.Tile) ([]byte, error))
}

// MaxTileSize is the most bytes t can hold: W hashes, or W entries of at
// most 4 KiB each after their 2-byte length.
func MaxTileSize(t tlog.Tile) int64 {
	if t.L == -1 {
		return int64(t.W) * (2 + maxEntrySize)
	}
	return int64(t.W) * tlog.HashSize
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
// Every file operation goes through os.Root, and every directory under
// dir must be a real one (ErrNotExport for a symbolic link or a file in
// its place), so nothing is written outside dir and no two tiles share a
// file. One export runs at a time (a lock on dir/.export.lock,
// ErrExportRunning). Each file is written durably (a temporary file,
// fsynced, renamed, the directory fsynced), every tile before the
// checkpoint and read back before it, so a reader never finds a
// checkpoint whose tiles are missing or wrong. It is idempotent: a tile
// already there with the same bytes is kept, and running it again writes
// nothing new for a log that did not grow.
//
// Before writing anything it checks every file under dir/tile: a tile
// the tree holds must hold its bytes, temporary files of an interrupted
// export are removed, and anything else is refused. It refuses a
// directory whose checkpoint is another log's (ErrOtherLog), or one this
// tree does not extend (ErrHistoryChanged: a rollback or a fork; keep it
// as evidence). Just before the checkpoint is replaced it is read again,
// and one of a larger tree is never replaced.
func ExportFrom(dir string, src TileSource) (ExportStats, error) {
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return ExportStats{}, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return ExportStats{}, err
	}
	defer root.Close()
	unlock, err := lockExport(root, dir)
	if err != nil {
		return ExportStats{}, err
	}
	defer unlock()
	signed, cp, err := src.Checkpoint()
	if err != nil {
		return ExportStats{}, err
	}
	d := exportDir{root: root, dir: dir}
	if local, ok := src.(LocalTileSource); ok {
		local.UseLocal(d.readTile)
	}
	st := ExportStats{Size: int64(cp.Size)}
	if err := d.checkCheckpoint(src, cp); err != nil {
		return st, err
	}
	missing, err := d.checkTiles(src, &st)
	if err != nil {
		return st, err
	}
	for i, t := range missing {
		data, err := src.Tile(t)
		if err != nil {
			return st, err
		}
		if err := d.write(TilePath(t), data); err != nil {
			return st, d.writeFailed(err, i, len(missing))
		}
		st.Written++
	}
	// Read back what was written: the checkpoint goes out only over
	// tiles that are there as they were written.
	for _, t := range missing {
		if err := d.sameTile(src, t); err != nil {
			return st, err
		}
	}
	return st, d.publish(signed, cp, &st)
}

// exportDir is an export's directory, opened as an os.Root.
type exportDir struct {
	root *os.Root
	dir  string
}

// show is rel as the user knows it: under dir.
func (d exportDir) show(rel string) string {
	return filepath.Join(d.dir, filepath.FromSlash(rel))
}

// lockExport takes dir's export lock, or refuses while another export
// holds it. The lock goes when the process does, whatever ends it.
func lockExport(root *os.Root, dir string) (func(), error) {
	if info, err := root.Lstat(exportLock); err == nil && !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file; remove it", ErrNotExport, filepath.Join(dir, exportLock))
	}
	f, err := root.OpenFile(exportLock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := io.ReadAll(io.LimitReader(f, 20))
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w (pid %s); wait for it to finish, then run the export again", ErrExportRunning, strings.TrimSpace(string(pid)))
		}
		return nil, err
	}
	// Who holds it, for the refusal above; the lock itself is the flock.
	if f.Truncate(0) == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}

// checkTiles checks every file under dir/tile (refusing, before anything
// is written, a file that is not this log's), removes temporary files an
// interrupted export left, and returns the tiles of the tree still
// missing.
func (d exportDir) checkTiles(src TileSource, st *ExportStats) ([]tlog.Tile, error) {
	found, temps, err := d.walkTiles()
	if err != nil {
		return nil, err
	}
	for t := range found {
		if !holds(st.Size, t) {
			return nil, fmt.Errorf("%w: %s is a tile past this log's %d entries: it is not this log's; export into an empty directory", ErrOtherLog, d.show(TilePath(t)), st.Size)
		}
		if err := d.sameTile(src, t); err != nil {
			return nil, err
		}
	}
	// Only once everything checked: a refused export changes nothing.
	for _, rel := range temps {
		if err := d.root.Remove(rel); err != nil {
			return nil, err
		}
		st.Removed++
	}
	var missing []tlog.Tile
	for _, t := range tilesOf(st.Size) {
		if found[t] {
			st.Kept++
		} else {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// walkTiles lists the tiles and the temporary files under dir/tile. Any
// other file, and any symbolic link, is refused.
func (d exportDir) walkTiles() (found map[tlog.Tile]bool, temps []string, err error) {
	found = map[tlog.Tile]bool{}
	if err := d.realDirs("tile/0"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	err = fs.WalkDir(d.root.FS(), "tile", func(rel string, e fs.DirEntry, err error) error {
		switch {
		case errors.Is(err, fs.ErrNotExist) && rel == "tile":
			return fs.SkipAll // a new directory
		case err != nil:
			return err
		case e.Type()&fs.ModeSymlink != 0:
			return d.notExport(rel, "is a symbolic link")
		case e.IsDir():
			return nil
		case !e.Type().IsRegular():
			return d.notExport(rel, "is not a regular file")
		case durable.IsTemp(e.Name()):
			temps = append(temps, rel)
			return nil
		}
		t, err := ParseTilePath(rel)
		if err != nil {
			return d.notExport(rel, "is not a tile")
		}
		found[t] = true
		return nil
	})
	return found, temps, err
}

// notExport refuses rel under dir.
func (d exportDir) notExport(rel, what string) error {
	return fmt.Errorf("%w: %s %s; an export writes only real files and directories: remove it or export into an empty directory", ErrNotExport, d.show(rel), what)
}

// realDirs checks that every existing directory of rel (a slash path
// under dir, rel itself included) is a real directory, not a symbolic
// link or a file. It stops, with fs.ErrNotExist, at the first missing one.
func (d exportDir) realDirs(rel string) error {
	parts := strings.Split(rel, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		info, err := d.root.Lstat(sub)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			return d.notExport(sub, "is a symbolic link")
		case !info.IsDir():
			return d.notExport(sub, "is not a directory")
		}
	}
	return nil
}

// mkdirs makes rel and its missing parents under dir, each a real
// directory, fsyncing each parent that gains one.
func (d exportDir) mkdirs(rel string) error {
	parts := strings.Split(rel, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		err := d.realDirs(sub)
		if !errors.Is(err, fs.ErrNotExist) {
			if err != nil {
				return err
			}
			continue
		}
		if err := d.root.Mkdir(sub, 0o755); err != nil {
			return err
		}
		if err := durable.SyncDirIn(d.root, path.Dir(sub)); err != nil {
			return err
		}
	}
	return nil
}

// readFile reads rel, a regular file of at most limit bytes whose
// directories are all real ones.
func (d exportDir) readFile(rel string, limit int64) ([]byte, error) {
	if dir := path.Dir(rel); dir != "." {
		if err := d.realDirs(dir); err != nil {
			return nil, err
		}
	}
	info, err := d.root.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() || info.Size() > limit {
		return nil, d.notExport(rel, "is not a tile or checkpoint file (not a regular file, or too large)")
	}
	f, err := d.root.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		return nil, d.notExport(rel, "is larger than a tile can be")
	}
	return data, err
}

// readTile reads t's file in dir (fs.ErrNotExist: none).
func (d exportDir) readTile(t tlog.Tile) ([]byte, error) {
	return d.readFile(TilePath(t), MaxTileSize(t))
}

// write writes rel durably, readable by everyone.
func (d exportDir) write(rel string, data []byte) error {
	if err := d.mkdirs(path.Dir(rel)); err != nil {
		return err
	}
	return durable.WriteFileIn(d.root, filepath.FromSlash(rel), data, 0o644)
}

// writeFailed says what a failed write means and what to do.
func (d exportDir) writeFailed(err error, done, of int) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("the disk of %s is full after %d of %d files: free space and run the export again (the files already written are kept and checked; no checkpoint was written)", d.dir, done, of)
	}
	return err
}

// sameTile checks that t's file in dir holds t's bytes. A file with other
// bytes is another log's.
func (d exportDir) sameTile(src TileSource, t tlog.Tile) error {
	have, err := d.readTile(t)
	if err != nil {
		return err
	}
	want, err := src.Tile(t)
	if err != nil {
		return err
	}
	if !bytes.Equal(have, want) {
		return fmt.Errorf("%w: %s is not this log's; export into an empty directory", ErrOtherLog, d.show(TilePath(t)))
	}
	return nil
}

// checkCheckpoint accepts an empty or new directory, or one whose
// checkpoint is this log's at a size it still extends.
func (d exportDir) checkCheckpoint(src TileSource, now *log.Checkpoint) error {
	old, err := d.oldCheckpoint(now)
	if old == nil || err != nil {
		return err
	}
	if old.Size > now.Size {
		return d.shrunk(old.Size, now.Size)
	}
	root, err := src.TreeHash(int64(old.Size))
	if err != nil {
		return err
	}
	if !bytes.Equal(root[:], old.Hash) {
		return fmt.Errorf("%w: %s is another history of this log at %d entries: the log forked. Keep %s as evidence, tell the appliance's operator, and check with custodian ledger verify --old %s (and --server, --verifier-key for a running appliance)",
			ErrHistoryChanged, d.show("checkpoint"), old.Size, d.dir, d.show("checkpoint"))
	}
	return nil
}

// oldCheckpoint reads dir's checkpoint (nil: none) and refuses another
// log's.
func (d exportDir) oldCheckpoint(now *log.Checkpoint) (*log.Checkpoint, error) {
	data, err := d.readFile("checkpoint", MaxCheckpointSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	old, err := unverifiedCheckpoint(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a checkpoint (%v); export into an empty directory", ErrNotExport, d.show("checkpoint"), err)
	}
	if old.Origin != now.Origin {
		return nil, fmt.Errorf("%w: %s is a checkpoint of %q, not of %q; export into an empty directory", ErrOtherLog, d.show("checkpoint"), old.Origin, now.Origin)
	}
	return old, nil
}

// shrunk refuses a tree smaller than the one dir published: the same log
// went back, and dir is the public record of it.
func (d exportDir) shrunk(had, now uint64) error {
	return fmt.Errorf("%w: the log now signs %d entries, but %s already published its checkpoint of %d: its ledger went back (restored or rolled back). Keep %s as evidence, tell the appliance's operator, and check with custodian ledger verify --old %s (and --server, --verifier-key for a running appliance)",
		ErrHistoryChanged, now, d.dir, had, d.dir, d.show("checkpoint"))
}

// publish writes the checkpoint last, after reading dir's again: one of a
// larger tree (another writer's) is never replaced.
func (d exportDir) publish(signed []byte, cp *log.Checkpoint, st *ExportStats) error {
	old, err := d.oldCheckpoint(cp)
	if err != nil {
		return err
	}
	if old != nil && old.Size > cp.Size {
		return d.shrunk(old.Size, cp.Size)
	}
	if data, err := d.readFile("checkpoint", MaxCheckpointSize); err == nil && bytes.Equal(data, signed) {
		st.Kept++ // the same tree: Ed25519 signs it the same way again
		return nil
	}
	if err := d.write("checkpoint", signed); err != nil {
		return d.writeFailed(err, st.Written, st.Written+1)
	}
	st.Written++
	return nil
}

// ledgerTiles is the ledger as a TileSource.
type ledgerTiles struct{ l *Ledger }

func (s ledgerTiles) Checkpoint() ([]byte, *log.Checkpoint, error) { return s.l.signedCheckpoint() }
func (s ledgerTiles) Tile(t tlog.Tile) ([]byte, error)             { return s.l.Tile(t) }

func (s ledgerTiles) TreeHash(n int64) (tlog.Hash, error) {
	var root tlog.Hash
	err := s.l.view(func(tx *bolt.Tx) error {
		var err error
		root, err = tlog.TreeHash(n, txHashReader{tx})
		return err
	})
	return root, err
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
