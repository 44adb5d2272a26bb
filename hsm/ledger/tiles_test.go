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
