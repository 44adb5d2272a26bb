package ledger_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/transparency-dev/formats/log"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/ledger/ledgertest"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// FuzzParseTilePath checks our parser against torchwood's, an independent
// C2SP tlog-tiles implementation: what we accept is exactly the path
// torchwood writes for that tile, and every path torchwood writes for a
// tile of height 8 and level 0..63 (C2SP's range) we accept.
func FuzzParseTilePath(f *testing.F) {
	for _, s := range []string{
		"tile/0/000", "tile/0/x001/x234/067", "tile/1/000.p/1", "tile/63/x009/x223/x372/x036/x854/x775/807.p/255",
		"tile/entries/000", "tile/entries/x001/234.p/255", "tile/data/000", "tile/8/0/000", "tile/0/000.p/256",
		"tile/0/000.p/0", "tile/0/0001", "tile/0/x001", "tile/64/000", "tile/00/000", "tile/entries/000.p/01",
		"tile//000", "tile/0/-01", "tile/0/+01", "checkpoint", "tile/entries/../000", strings.Repeat("x999/", 20),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		tile, err := ledger.ParseTilePath(path)
		if err == nil {
			if got := torchwood.TilePath(tile); got != path {
				t.Fatalf("accepted %q, but torchwood writes that tile as %q", path, got)
			}
			if ledger.TilePath(tile) != path {
				t.Fatalf("accepted %q, but write it as %q", path, ledger.TilePath(tile))
			}
			return
		}
		if theirs, err := torchwood.ParseTilePath(path); err == nil && theirs.H == 8 && theirs.L <= 63 && torchwood.TilePath(theirs) == path {
			t.Fatalf("refused %q, which torchwood writes for %+v", path, theirs)
		}
	})
}

// TestTilePathsRefused: anything but the canonical form is refused with a
// message that says what a tile path looks like.
func TestTilePathsRefused(t *testing.T) {
	for _, path := range []string{
		"", "checkpoint", "tile", "tile/", "tile/0", "tile/0/", "tile/0/1", "tile/0/001/", "tile/0/x001",
		"tile/0/0001", "tile/0/x000/001", "tile/64/000", "tile/-1/000", "tile/00/000", "tile/8/0/000",
		"tile/data/000", "tile/entries/000.p/0", "tile/entries/000.p/256", "tile/entries/000.p/01",
		"tile/0/000.p", "tile/0/000.p/", "tile/0/../000", "tile/0/000?x", "/tile/0/000", "tile/0/000/",
		"tile/0/x1000/000", "tile/0/" + strings.Repeat("x999/", 20) + "999",
	} {
		_, err := ledger.ParseTilePath(path)
		if err == nil {
			t.Errorf("%q was accepted", path)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "tile/<L>/<N>[.p/<W>]") || strings.Contains(msg, "strconv") {
			t.Errorf("%q: %q does not say what a tile path is", path, msg)
		}
	}
}

// TestExportIsIdempotentAndOnlyGrows: an export writes every tile and the
// checkpoint; again on the same ledger it writes nothing; after growth it
// writes only what is new, and every tile it wrote is the ledger's own
// (x/mod's tlog.CheckTree over the tiles' hashes is left to the end-to-end
// test; here the bytes are compared with Tile's).
func TestExportIsIdempotentAndOnlyGrows(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		l := create(t, d, t.TempDir())
		appendN(t, l, 9)
		out := filepath.Join(t.TempDir(), "public")
		st, err := l.Export(out)
		if err != nil {
			t.Fatal(err)
		}
		// 10 entries: a partial level-0 tile, its entry bundle, the checkpoint.
		if st.Size != 10 || st.Written != 3 || st.Kept != 0 {
			t.Fatalf("first export: %+v", st)
		}
		files := ledgertest.ReadTree(t, out)
		for _, p := range []string{"checkpoint", "tile/0/000.p/10", "tile/entries/000.p/10"} {
			if files[p] == nil {
				t.Fatalf("no %s in %v", p, files)
			}
		}
		if st, err := l.Export(out); err != nil || st.Written != 0 || st.Kept != 3 {
			t.Fatalf("again: %+v %v", st, err)
		}
		appendN(t, l, 2)
		if st, err := l.Export(out); err != nil || st.Written != 3 || st.Kept != 0 {
			t.Fatalf("after growth: %+v %v", st, err)
		}
		files = ledgertest.ReadTree(t, out)
		if len(files) != 5 { // the old partial tiles stay: they are still this log's
			t.Fatalf("files: %v", len(files))
		}
		for path, data := range files {
			if path == "checkpoint" {
				continue
			}
			tile, err := ledger.ParseTilePath(path)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			want, err := l.Tile(tile)
			if err != nil || !bytes.Equal(data, want) {
				t.Fatalf("%s is not the ledger's tile: %v", path, err)
			}
		}
		if _, err := l.Tile(tlog.Tile{H: 8, L: 0, N: 0, W: 13}); !errors.Is(err, ledger.ErrTileBeyondTree) {
			t.Fatalf("a tile past the tree: %v", err)
		}
	})
}

// TestInvariantExportNeverOverwritesAnotherLog: an export into a directory
// that holds another ledger's tiles, a tile with other bytes, or a newer
// checkpoint of this ledger (a restored copy exporting over the public
// record) is refused, and the directory is left exactly as it was.
func TestInvariantExportNeverOverwritesAnotherLog(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		d := newDevice(t, conn)
		dir := t.TempDir()
		l := create(t, d, dir)
		appendN(t, l, 3)
		copyDir := t.TempDir()
		data, err := os.ReadFile(filepath.Join(dir, ledger.FileName))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(copyDir, ledger.FileName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		appendN(t, l, 5)

		refused := func(what, out string, from *ledger.Ledger, want string) {
			t.Helper()
			before := ledgertest.ReadTree(t, out)
			_, err := from.Export(out)
			// Another log's files: start a new directory. The same log
			// gone back or forked: the directory is the evidence.
			advice, cause := "export into an empty directory", ledger.ErrOtherLog
			if strings.Contains(want, "went back") || strings.Contains(want, "another history") {
				advice, cause = "as evidence", ledger.ErrHistoryChanged
			}
			if !errors.Is(err, cause) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), advice) {
				t.Fatalf("%s: %v", what, err)
			}
			after := ledgertest.ReadTree(t, out)
			if len(after) != len(before) {
				t.Fatalf("%s: the refused export changed the directory", what)
			}
			for p := range before {
				if !bytes.Equal(before[p], after[p]) {
					t.Fatalf("%s: the refused export changed %s", what, p)
				}
			}
		}

		// The restored copy (blocked, still readable and signing) must
		// not export over the newer record.
		newer := t.TempDir()
		if _, err := l.Export(newer); err != nil {
			t.Fatal(err)
		}
		old, err := ledger.Open(copyDir, d.config(t))
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		if old.Blocked() == nil {
			t.Fatal("the restored copy is not blocked")
		}
		refused("a restored copy", newer, old, "its ledger went back")

		// Another history under the same origin: a fork.
		tile := filepath.Join(newer, "tile", "entries", "000.p", "9")
		cp, err := os.ReadFile(filepath.Join(newer, "checkpoint"))
		if err != nil {
			t.Fatal(err)
		}
		fork := t.TempDir()
		if err := os.WriteFile(filepath.Join(fork, "checkpoint"), bytes.Replace(cp, []byte("\n9\n"), []byte("\n4\n"), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		refused("another history", fork, l, "another history of this log")

		// Another log's checkpoint.
		otherLog := t.TempDir()
		if err := os.WriteFile(filepath.Join(otherLog, "checkpoint"), bytes.ReplaceAll(cp, []byte(origin), []byte("custodian/court-b")), 0o644); err != nil {
			t.Fatal(err)
		}
		refused("another log", otherLog, l, `a checkpoint of "custodian/court-b"`)

		// A tile with other bytes, without a checkpoint.
		tampered := t.TempDir()
		if _, err := l.Export(tampered); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(tampered, "checkpoint"))
		bundle, err := os.ReadFile(tile)
		if err != nil {
			t.Fatal(err)
		}
		bundle[len(bundle)-2] ^= 1
		if err := os.WriteFile(filepath.Join(tampered, "tile", "entries", "000.p", "9"), bundle, 0o644); err != nil {
			t.Fatal(err)
		}
		refused("a tile with other bytes", tampered, l, "is not this log's")
	})
}

// FuzzSplitBundle checks our bundle splitter against torchwood's reader:
// what we accept torchwood reads the same way, entry for entry, and
// writing the entries back with torchwood gives the same bytes.
func FuzzSplitBundle(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0, 0}, 2)
	f.Add([]byte{0, 1, 'a'}, 2)
	f.Add([]byte{0, 2, 'a'}, 1)
	f.Add([]byte{0x10, 0x01}, 1)
	f.Add([]byte{0, 0, 9}, 1)
	f.Fuzz(func(t *testing.T, data []byte, w int) {
		entries, err := ledger.SplitBundle(data, w)
		if err != nil {
			return
		}
		if len(entries) != w {
			t.Fatalf("%d entries for width %d", len(entries), w)
		}
		var again []byte
		rest := data
		for i, e := range entries {
			theirs, r, err := torchwood.ReadTileEntry(rest)
			if err != nil || !bytes.Equal(theirs, e) {
				t.Fatalf("entry %d: torchwood reads %q (%v), we %q", i, theirs, err, e)
			}
			rest = r
			if again, err = torchwood.AppendTileEntry(again, e); err != nil {
				t.Fatal(err)
			}
		}
		if len(rest) != 0 || !bytes.Equal(again, data) {
			t.Fatalf("accepted %x, which does not round-trip", data)
		}
	})
}

// exportOf is the ledger exported into a new directory under t's.
func exportOf(t *testing.T, l *ledger.Ledger) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "public")
	if _, err := l.Export(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestInvariantExportStaysInsideItsDirectory: a symbolic link under DIR,
// to elsewhere or to another directory of DIR, and a file where a
// directory goes are refused before anything is written: nothing lands
// outside DIR, two tiles never share a file, and the message says what
// to do in the product's terms.
func TestInvariantExportStaysInsideItsDirectory(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		l := create(t, newDevice(t, target.Open(t)), t.TempDir())
		appendN(t, l, 299) // 300 entries: a full tile and a partial one
		cases := []struct {
			what  string
			plant func(t *testing.T, dir, elsewhere string) error
			want  string
		}{
			{"DIR/tile a link outside", func(t *testing.T, dir, elsewhere string) error {
				return os.Symlink(elsewhere, filepath.Join(dir, "tile"))
			}, "tile is a symbolic link"},
			{"DIR/tile/entries a link to DIR/tile/0", func(t *testing.T, dir, _ string) error {
				if err := os.MkdirAll(filepath.Join(dir, "tile", "0"), 0o755); err != nil {
					return err
				}
				return os.Symlink("0", filepath.Join(dir, "tile", "entries"))
			}, "entries is a symbolic link"},
			{"DIR/tile/0/000.p a link outside", func(t *testing.T, dir, elsewhere string) error {
				if err := os.MkdirAll(filepath.Join(dir, "tile", "0"), 0o755); err != nil {
					return err
				}
				return os.Symlink(elsewhere, filepath.Join(dir, "tile", "0", "001.p"))
			}, "001.p is a symbolic link"},
			{"DIR/tile a file", func(t *testing.T, dir, _ string) error {
				return os.WriteFile(filepath.Join(dir, "tile"), []byte("x"), 0o644)
			}, "tile is not a directory"},
		}
		for _, c := range cases {
			dir, elsewhere := filepath.Join(t.TempDir(), "public"), t.TempDir()
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := c.plant(t, dir, elsewhere); err != nil {
				t.Fatal(err)
			}
			_, err := l.Export(dir)
			if !errors.Is(err, ledger.ErrNotExport) || !strings.Contains(err.Error(), c.want) ||
				!strings.Contains(err.Error(), "export into an empty directory") || strings.Contains(err.Error(), "lstat") {
				t.Errorf("%s: %v", c.what, err)
			}
			if outside := ledgertest.ReadTree(t, elsewhere); len(outside) != 0 {
				t.Errorf("%s: the export wrote %d files outside its directory", c.what, len(outside))
			}
			if _, err := os.Lstat(filepath.Join(dir, "checkpoint")); err == nil {
				t.Errorf("%s: a checkpoint was published", c.what)
			}
		}
	})
}

// TestInvariantExportChecksEveryFileUnderTile: a file under DIR/tile that
// this export does not write (an old partial width) is still checked, a
// file that is no tile is refused, and temporary files an interrupted
// export left are removed, so DIR holds only this log's checked files.
func TestInvariantExportChecksEveryFileUnderTile(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		l := create(t, newDevice(t, target.Open(t)), t.TempDir())
		appendN(t, l, 299)
		plant := func(t *testing.T, rel string, data []byte) string {
			t.Helper()
			dir := filepath.Join(t.TempDir(), "public")
			path := filepath.Join(dir, filepath.FromSlash(rel))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}
		dir := plant(t, "tile/entries/001.p/7", []byte("\x00\x03not this log's entries"))
		if _, err := l.Export(dir); !errors.Is(err, ledger.ErrOtherLog) || !strings.Contains(err.Error(), "001.p/7 is not this log's") {
			t.Errorf("a foreign old partial bundle: %v", err)
		}
		dir = plant(t, "tile/0/notes.txt", []byte("hello"))
		if _, err := l.Export(dir); !errors.Is(err, ledger.ErrNotExport) || !strings.Contains(err.Error(), "notes.txt is not a tile") {
			t.Errorf("a file that is no tile: %v", err)
		}
		// A refused export changes nothing, leftovers included.
		temp := filepath.Join(dir, "tile", "0", ".000.tmp42")
		if err := os.WriteFile(temp, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Export(dir); err == nil {
			t.Fatal("a file that is no tile was accepted")
		}
		if _, err := os.Stat(temp); err != nil {
			t.Errorf("a refused export removed a leftover: %v", err)
		}
		dir = plant(t, "tile/entries/.000.tmp123", []byte("half a bundle"))
		st, err := l.Export(dir)
		if err != nil || st.Removed != 1 {
			t.Fatalf("a leftover temporary file: %+v %v", st, err)
		}
		for p := range ledgertest.ReadTree(t, dir) {
			if strings.Contains(p, ".tmp") {
				t.Errorf("%s left in the published directory", p)
			}
		}
		// An old partial tile of this log is checked and kept.
		dir = exportOf(t, l)
		appendN(t, l, 10)
		if st, err := l.Export(dir); err != nil || st.Written != 3 {
			t.Fatalf("after growth: %+v %v", st, err)
		}
	})
}

// frozenSource is the ledger at an older signed checkpoint, as a slow
// export that read its checkpoint earlier sees it; before its first tile
// it runs meanwhile.
type frozenSource struct {
	l         *ledger.Ledger
	signed    []byte
	cp        *log.Checkpoint
	meanwhile func()
}

func (s *frozenSource) Checkpoint() ([]byte, *log.Checkpoint, error) { return s.signed, s.cp, nil }
func (s *frozenSource) TreeHash(n int64) (tlog.Hash, error) {
	return tlog.Hash{}, errors.New("not needed: the directory starts empty")
}
func (s *frozenSource) Tile(t tlog.Tile) ([]byte, error) {
	if s.meanwhile != nil {
		f := s.meanwhile
		s.meanwhile = nil
		f()
	}
	return s.l.Tile(t)
}

// checkpointOf reads a signed checkpoint's text (its signature is the
// ledger's own).
func checkpointOf(t *testing.T, signed []byte) *log.Checkpoint {
	t.Helper()
	body, _, _ := bytes.Cut(signed, []byte("\n\n"))
	var cp log.Checkpoint
	if _, err := cp.Unmarshal(append(body, '\n')); err != nil {
		t.Fatal(err)
	}
	return &cp
}

// TestInvariantExportNeverRollsTheCheckpointBack: while one export runs,
// another into the same directory is refused and names the one running;
// and a checkpoint of a larger tree that appears in DIR while an export
// runs (another writer's) is never replaced by the export's smaller one.
func TestInvariantExportNeverRollsTheCheckpointBack(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		l := create(t, newDevice(t, target.Open(t)), t.TempDir())
		appendN(t, l, 300)
		signed, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		appendN(t, l, 300)
		larger, err := l.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}

		dir := filepath.Join(t.TempDir(), "public")
		var second error
		slow := &frozenSource{l: l, signed: signed, cp: checkpointOf(t, signed), meanwhile: func() {
			_, second = l.Export(dir)
		}}
		if _, err := ledger.ExportFrom(dir, slow); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(second, ledger.ErrExportRunning) || !strings.Contains(second.Error(), "pid") {
			t.Errorf("a second export while one ran: %v", second)
		}

		dir = filepath.Join(t.TempDir(), "public")
		slow = &frozenSource{l: l, signed: signed, cp: checkpointOf(t, signed), meanwhile: func() {
			if err := os.WriteFile(filepath.Join(dir, "checkpoint"), larger, 0o644); err != nil {
				t.Error(err)
			}
		}}
		if _, err := ledger.ExportFrom(dir, slow); !errors.Is(err, ledger.ErrHistoryChanged) {
			t.Errorf("an export whose checkpoint is smaller than the one DIR holds by then: %v", err)
		}
		if data, _ := os.ReadFile(filepath.Join(dir, "checkpoint")); !bytes.Equal(data, larger) {
			t.Errorf("the larger checkpoint was replaced")
		}
	})
}
