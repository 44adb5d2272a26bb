package ledger_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// journalRecords returns where each record of the journal in dir starts
// (by its framing: magic, 8-byte length, payload, 32-byte hash).
func journalRecords(t *testing.T, dir string) (data []byte, starts []int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, ledger.JournalName))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); {
		if len(bytes.Trim(data[off:], "\x00")) == 0 {
			return data[:off], starts // a ledger open, or killed, keeps zeros after its records
		}
		starts = append(starts, off)
		off += 12 + int(binary.BigEndian.Uint64(data[off+4:])) + 32
	}
	return data, starts
}

func writeJournal(t *testing.T, dir string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, ledger.JournalName), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestInvariantTornJournalTailIsDropped: a record cut short by a crash
// during its write (its sync never returned, so nothing acknowledged it)
// is cut away at Open, durably, and the ledger opens as it was before it:
// whether the tail is a prefix of the record, the file grown with zeros
// the record never reached, or the whole length with a byte that never
// came.
func TestInvariantTornJournalTailIsDropped(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close()
	before, _ := journalRecords(t, dir)
	pristine := filepath.Join(t.TempDir(), "pristine")
	copyTree(t, dir, pristine)

	// A note does not touch the TPM counter: its record alone is the tail.
	l = open(t, d, dir)
	if err := l.PutNotes(ledger.Note{Key: []byte("package"), Value: bytes.Repeat([]byte("p"), 10000)}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	after, starts := journalRecords(t, dir)
	record := after[len(before):starts[len(starts)-1]] // the note's record, without the clean marker

	flipped := bytes.Clone(record)
	flipped[len(flipped)/2] ^= 1
	for name, tail := range map[string][]byte{
		"a prefix":               record[:len(record)/2],
		"a header cut short":     record[:7],
		"zeros":                  make([]byte, 8192),
		"a prefix, then zeros":   append(bytes.Clone(record[:3000]), make([]byte, 5000)...),
		"a byte that never came": flipped,
	} {
		t.Run(name, func(t *testing.T) {
			copyTree(t, pristine, dir)
			writeJournal(t, dir, append(bytes.Clone(before), tail...))
			l := open(t, d, dir)
			if err := l.Blocked(); err != nil {
				t.Fatalf("blocked after a torn tail: %v", err)
			}
			if _, err := l.GetNote([]byte("package"), 1<<20); !errors.Is(err, ledger.ErrNoNote) {
				t.Fatalf("the torn note reads back: %v", err)
			}
			got, err := os.ReadFile(filepath.Join(dir, ledger.JournalName))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, before) {
				t.Fatalf("the journal is %d bytes after Open; want the %d before the torn record", len(got), len(before))
			}
			// It takes writes again (a note: the TPM counter stays where
			// the next subtest expects it).
			if err := l.PutNotes(ledger.Note{Key: []byte("after"), Value: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInvariantDamagedJournalRecordBlocks: a record that is not the last
// and does not match its hash, or whose length was changed, is damage,
// not a torn tail: Open refuses with ErrJournalDamaged (a blocked ledger),
// names what to restore, and leaves the journal as it found it.
func TestInvariantDamagedJournalRecordBlocks(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close()
	pristine, starts := journalRecords(t, dir)
	second := starts[1]
	for name, edit := range map[string]func([]byte){
		"a byte of a middle record": func(b []byte) { b[second+40] ^= 1 },
		"a middle record's length":  func(b []byte) { binary.BigEndian.PutUint64(b[second+4:], 1<<29) },
		"a middle record's magic":   func(b []byte) { b[second] = 'X' },
		"the first record's hash":   func(b []byte) { b[second-1] ^= 1 },
	} {
		t.Run(name, func(t *testing.T) {
			edited := bytes.Clone(pristine)
			edit(edited)
			writeJournal(t, dir, edited)
			_, err := ledger.Open(dir, d.config(t))
			if !errors.Is(err, ledger.ErrJournalDamaged) || !errors.Is(err, ledger.ErrBlocked) || !strings.Contains(err.Error(), "restore") {
				t.Fatalf("Open of a damaged journal: %v; want ErrJournalDamaged saying what to restore", err)
			}
			got, _ := journalRecords(t, dir)
			if !bytes.Equal(got, edited) {
				t.Fatal("Open changed a damaged journal: the evidence is gone")
			}
		})
	}
}

// TestInvariantUncleanIndexIsRebuiltFromJournal: a process killed after
// an entry's journal record was synced but before ledger.db committed it
// (and before the TPM counted it) leaves the entry durable: the next Open
// rebuilds ledger.db from the journal, finds the entry, and finishes the
// counter's increment. A ledger.db torn by the crash is rebuilt the same.
func TestInvariantUncleanIndexIsRebuiltFromJournal(t *testing.T) {
	for _, torn := range []bool{false, true} {
		name := "index behind"
		if torn {
			name = "index torn"
		}
		t.Run(name, func(t *testing.T) {
			sw := tpmtest.StartSwtpm(t)
			conn, err := tpm.Open(sw.Spec())
			if err != nil {
				t.Fatal(err)
			}
			d := newDevice(t, conn)
			dir := t.TempDir()
			create(t, d, dir).Close()
			shareKey(t, d)
			conn.Close()
			t.Setenv("CRASH_BEFORE_INDEX_COMMIT", "1")
			acked := crashRound(t, dir, sw.Spec(), false, time.Hour)
			if acked != 1 {
				t.Fatalf("the appender acknowledged up to entry %d before it died; want 1", acked)
			}
			if torn {
				tearIndex(t, dir)
			}
			// The killed append (entry 2) is in the journal alone.
			checkAfterCrash(t, sw, dir, acked+1, 0)
		})
	}
}

// tearIndex overwrites ledger.db's pages after its meta pages with
// garbage, as a power cut during a commit that was never synced can.
func tearIndex(t *testing.T, dir string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, ledger.FileName), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 16384), 8192); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyLedgerIsMigrated: a data directory of the format before the
// journal (ledger.db alone, every commit synced in it) opens unblocked:
// its contents become the journal's first record, and from then on the
// journal alone is enough to rebuild it.
func TestLegacyLedgerIsMigrated(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 4)
	if err := l.PutNotes(ledger.Note{Key: []byte("n"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// The older format: no journal, and no journal sequence in meta.
	if err := os.Remove(filepath.Join(dir, ledger.JournalName)); err != nil {
		t.Fatal(err)
	}
	editBucket(t, dir, "meta", func(b *bolt.Bucket) error { return b.Delete([]byte("journal-seq")) })

	l = open(t, d, dir)
	if err := l.Blocked(); err != nil {
		t.Fatalf("the migrated ledger is blocked: %v", err)
	}
	if l.Size() != 5 {
		t.Fatalf("the migrated ledger has %d entries, want 5", l.Size())
	}
	appendN(t, l, 1)
	l.Close()
	if _, starts := journalRecords(t, dir); len(starts) != 4 { // snapshot, clean, append, clean
		t.Fatalf("the journal has %d records after a migration and an append; want 4", len(starts))
	}
	if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	l = open(t, d, dir)
	if err := l.Blocked(); err != nil || l.Size() != 6 {
		t.Fatalf("rebuilt from the migrated journal: %d entries, blocked %v; want 6, unblocked", l.Size(), err)
	}
	if v, err := l.GetNote([]byte("n"), 10); err != nil || string(v) != "v" {
		t.Fatalf("the note did not survive the migration: %q, %v", v, err)
	}
	if err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}

// TestInvariantSecondOpenerIsRefused: while one process has the ledger,
// another Open (or Create) is refused with ErrInUse and writes nothing;
// the journal's lock alone is enough, whatever holds ledger.db.
func TestInvariantSecondOpenerIsRefused(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	before, _ := journalRecords(t, dir)
	if _, err := ledger.Open(dir, d.config(t)); !errors.Is(err, ledger.ErrInUse) {
		t.Fatalf("second Open while the ledger is open: %v; want ErrInUse", err)
	}
	if _, err := ledger.Create(dir, d.config(t), t0); !errors.Is(err, ledger.ErrLedgerExists) {
		t.Fatalf("Create beside an open ledger: %v; want ErrLedgerExists", err)
	}
	l.Close()
	if after, _ := journalRecords(t, dir); !bytes.Equal(after[:len(before)], before) {
		t.Fatal("a refused opener changed the journal")
	}

	// Someone holding only the journal's lock still keeps Open out.
	f, err := os.Open(filepath.Join(dir, ledger.JournalName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.Open(dir, d.config(t)); !errors.Is(err, ledger.ErrInUse) {
		t.Fatalf("Open while the journal is locked: %v; want ErrInUse", err)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	open(t, d, dir)
}

// TestSeenInRefusesAnUncleanIndex: SeenIn reads ledger.db only when the
// journal ends by saying it was closed cleanly; while a process has the
// ledger it is ErrInUse; an index that was not closed cleanly, or missing
// beside its journal, is ErrIndexUnclean, which says how to rebuild it.
func TestSeenInRefusesAnUncleanIndex(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	if _, err := l.Append(ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}, []byte("w"), []byte("court-a/W-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.SeenIn(dir, []byte("court-a/W-1")); !errors.Is(err, ledger.ErrInUse) {
		t.Fatalf("SeenIn while the ledger is open: %v; want ErrInUse", err)
	}
	l.Close()
	if r, err := ledger.SeenIn(dir, []byte("court-a/W-1")); err != nil || !r.Seen || r.Index != 1 {
		t.Fatalf("SeenIn after a clean close: %+v, %v; want seen in entry 1", r, err)
	}
	data, starts := journalRecords(t, dir)
	writeJournal(t, dir, data[:starts[len(starts)-1]]) // as if killed before Close
	_, err := ledger.SeenIn(dir, []byte("court-a/W-1"))
	if !errors.Is(err, ledger.ErrIndexUnclean) || !strings.Contains(err.Error(), "custodian ledger verify") {
		t.Fatalf("SeenIn of an index not closed cleanly: %v; want ErrIndexUnclean", err)
	}
	if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := ledger.SeenIn(dir, []byte("court-a/W-1")); !errors.Is(err, ledger.ErrIndexUnclean) {
		t.Fatalf("SeenIn with the journal alone: %v; want ErrIndexUnclean", err)
	}
	open(t, d, dir).Close() // rebuilds, marks clean
	if r, err := ledger.SeenIn(dir, []byte("court-a/W-1")); err != nil || !r.Seen {
		t.Fatalf("SeenIn after the rebuild: %+v, %v", r, err)
	}
}

// TestRebuiltIndexIsTheIndex: every write the ledger makes goes through
// its journal. After appends (with a replay key and with notes), notes
// alone, a moved note, a change of a bound directory and a resolve,
// ledger.db rebuilt from the journal alone holds exactly what the
// ledger.db written beside it held, bucket by bucket.
func TestRebuiltIndexIsTheIndex(t *testing.T) {
	d, dir, trustDir := boundDevice(t)
	if err := os.Mkdir(trustDir, 0o700); err != nil {
		t.Fatal(err)
	}
	l := create(t, d, dir)
	appendN(t, l, 2)
	e := ledger.Entry{Time: t0.Add(time.Hour), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
	if _, err := l.AppendNoted(e, []byte("w"), []byte("court-a/W-1"), func(i int64) ([]ledger.Note, error) {
		return []ledger.Note{{Key: []byte("request/1"), Value: []byte("entry " + strconv.FormatInt(i, 10))}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.PutNotes(ledger.Note{Key: []byte("package/1"), Value: bytes.Repeat([]byte{7}, 100000)}); err != nil {
		t.Fatal(err)
	}
	if err := l.MoveNote([]byte("request/1"), []byte("unmatched/1")); err != nil {
		t.Fatal(err)
	}
	change := ledger.Entry{Time: t0.Add(2 * time.Hour), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
	if _, err := l.Change("trust", change, []byte("crl"), func() error {
		return os.WriteFile(filepath.Join(trustDir, "crl.pem"), []byte("crl"), 0o600)
	}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := os.WriteFile(filepath.Join(trustDir, "root.pem"), []byte("put back"), 0o600); err != nil {
		t.Fatal(err)
	}
	l = open(t, d, dir)
	if _, err := l.ResolveRollback(t0.Add(3 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	l.Close()

	written := dumpIndex(t, dir)
	if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	l = open(t, d, dir)
	if err := l.Blocked(); err != nil {
		t.Fatalf("the rebuilt ledger is blocked: %v", err)
	}
	l.Close()
	if rebuilt := dumpIndex(t, dir); rebuilt != written {
		t.Fatalf("ledger.db rebuilt from the journal differs from the one written beside it:\nwritten:\n%.2000s\nrebuilt:\n%.2000s", written, rebuilt)
	}
}

// dumpIndex lists every bucket, key and value hash of ledger.db in dir.
func dumpIndex(t *testing.T, dir string) string {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, ledger.FileName), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out strings.Builder
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				fmt.Fprintf(&out, "%s %x %x\n", name, k, sha256.Sum256(v))
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestFailedJournalSyncWritesNothing: when the journal's sync fails, the
// append fails, the journal is cut back to where it was and ledger.db
// does not commit: the ledger neither holds the entry nor blocks, and the
// next append takes its place.
func TestFailedJournalSyncWritesNothing(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 1)
	before, _ := journalRecords(t, dir)
	sync := *ledger.SyncJournal
	*ledger.SyncJournal = func(*os.File) error { return errors.New("I/O error") }
	e := ledger.Entry{Time: t0.Add(time.Hour), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
	_, err := l.Append(e, []byte("w"), []byte("court-a/W-1"))
	*ledger.SyncJournal = sync
	if err == nil || errors.Is(err, ledger.ErrUncounted) {
		t.Fatalf("an append whose journal sync failed: %v; want a plain failure", err)
	}
	if after, _ := journalRecords(t, dir); !bytes.Equal(after, before) {
		t.Fatalf("the journal's records are %d bytes after a failed sync; want the %d before it", len(after), len(before))
	}
	if err := l.Blocked(); err != nil || l.Size() != 2 {
		t.Fatalf("after a failed sync: %d entries, blocked %v; want 2, unblocked", l.Size(), err)
	}
	if _, seen, _ := l.Seen([]byte("court-a/W-1")); seen {
		t.Fatal("ledger.db committed the replay key of an append that failed")
	}
	if i, err := l.Append(e, []byte("w"), []byte("court-a/W-1")); err != nil || i != 2 {
		t.Fatalf("the next append: %d, %v; want entry 2", i, err)
	}
	l.Close()
	if l := open(t, d, dir); l.Blocked() != nil || l.Size() != 3 {
		t.Fatalf("reopened: %d entries, blocked %v", l.Size(), l.Blocked())
	}
}

// TestInvariantAcknowledgedWriteIsReadAtOnce: ledger.db commits after an
// append or a note's write returns; every read waits for that commit, so
// what was acknowledged (the entry, its proof, its replay key, a note) is
// there the moment the call returns, in the same goroutine or another.
func TestInvariantAcknowledgedWriteIsReadAtOnce(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	l := create(t, d, t.TempDir())
	for i := range 30 {
		key := fmt.Appendf(nil, "court-a/W-%d", i)
		e := ledger.Entry{Time: t0.Add(time.Duration(i) * time.Second), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
		n, err := l.Append(e, []byte("w"), key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Entry(n); err != nil {
			t.Fatalf("entry %d, read right after its append: %v", n, err)
		}
		if _, err := l.Prove(n); err != nil {
			t.Fatalf("entry %d's proof, read right after its append: %v", n, err)
		}
		if _, seen, err := l.Seen(key); err != nil || !seen {
			t.Fatalf("replay key of entry %d, read right after its append: seen %v, %v", n, seen, err)
		}
		note := ledger.Note{Key: fmt.Appendf(nil, "records/%d", i), Value: []byte("{}")}
		if err := l.PutNotes(note); err != nil {
			t.Fatal(err)
		}
		got := make(chan error)
		go func() {
			_, err := l.GetNote(note.Key, 1<<10)
			got <- err
		}()
		if err := <-got; err != nil {
			t.Fatalf("note %q, read right after it was written: %v", note.Key, err)
		}
	}
}
