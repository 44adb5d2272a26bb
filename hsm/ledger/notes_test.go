package ledger_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestNoteWithEntryIsWrittenWithItOrNotAtAll: a note written with an
// entry (AppendNoted) names the entry's index and is there after a
// reopen exactly when the entry is; a note that cannot be made leaves no
// entry, no spent replay key and no note. The notes do not touch the
// state: the ledger reopens unblocked, and the state's binding holds.
func TestNoteWithEntryIsWrittenWithItOrNotAtAll(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		dir := t.TempDir()
		l := create(t, d, dir)
		e := ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
		key := []byte("request/a")

		size := l.Size()
		_, err := l.AppendNoted(e, []byte("warrant"), []byte("replay"), func(int64) ([]ledger.Note, error) {
			return nil, errors.New("no note")
		})
		if err == nil || l.Size() != size {
			t.Fatalf("a failed note: %v, size %d -> %d", err, size, l.Size())
		}
		if _, seen, _ := l.Seen([]byte("replay")); seen {
			t.Fatal("a failed note spent the replay key")
		}

		i, err := l.AppendNoted(e, []byte("warrant"), []byte("replay"), func(index int64) ([]ledger.Note, error) {
			return []ledger.Note{{Key: key, Value: fmt.Appendf(nil, "entry %d", index)}}, nil
		})
		if err != nil || i != size {
			t.Fatalf("AppendNoted = %d, %v; want %d", i, err, size)
		}
		if err := l.PutNotes(ledger.Note{Key: []byte("package/a/k"), Value: []byte("pkg")}); err != nil {
			t.Fatal(err)
		}
		l.Close()
		l = open(t, d, dir)
		if err := l.Blocked(); err != nil {
			t.Fatalf("notes blocked the ledger: %v", err)
		}
		if v, err := l.GetNote(key, 1<<10); err != nil || !bytes.Equal(v, fmt.Appendf(nil, "entry %d", i)) {
			t.Fatalf("note after reopen: %q %v", v, err)
		}
		if keys, err := l.NoteKeys([]byte("request/")); err != nil || len(keys) != 1 || !bytes.Equal(keys[0], key) {
			t.Fatalf("NoteKeys = %q %v", keys, err)
		}
		if err := l.MoveNote(key, []byte("unmatched/a")); err != nil {
			t.Fatal(err)
		}
		if _, err := l.GetNote(key, 1<<10); !errors.Is(err, ledger.ErrNoNote) {
			t.Fatalf("a moved note is still there: %v", err)
		}
		if v, err := l.GetNote([]byte("unmatched/a"), 1<<10); err != nil || len(v) == 0 {
			t.Fatalf("the moved note: %q %v", v, err)
		}
		if err := l.MoveNote(key, []byte("x")); !errors.Is(err, ledger.ErrNoNote) {
			t.Fatalf("moving a missing note: %v", err)
		}
	})
}

// TestInvariantUncountedEntryIsReportedWithItsIndex: when the TPM refuses
// the counter's increment after an entry and its notes committed, the
// append says so (ErrUncounted, with the entry's index), not "nothing
// appended": the caller must account for an entry that stands, with the
// note naming it. The ledger blocks, and the reopen finishes the count.
func TestInvariantUncountedEntryIsReportedWithItsIndex(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		d := newDevice(t, target.Open(t))
		dir := t.TempDir()
		l, faulty := createFailing(t, d, dir)
		size := l.Size()
		faulty.armed = true
		e := ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
		key := []byte("request/a")
		i, err := l.AppendNoted(e, []byte("warrant"), []byte("replay"), func(index int64) ([]ledger.Note, error) {
			return []ledger.Note{{Key: key, Value: fmt.Appendf(nil, "entry %d", index)}}, nil
		})
		if !errors.Is(err, ledger.ErrUncounted) || !errors.Is(err, ledger.ErrBlocked) || i != size {
			t.Fatalf("AppendNoted with a refused increment = %d, %v; want %d with ErrUncounted", i, err, size)
		}
		if _, err := l.Append(e, nil, nil); errors.Is(err, ledger.ErrUncounted) || !errors.Is(err, ledger.ErrBlocked) {
			t.Fatalf("an append after it: %v, want blocked and nothing stored", err)
		}
		l.Close()

		l = open(t, d, dir)
		if err := l.Blocked(); err != nil || l.Size() != size+1 {
			t.Fatalf("reopen: blocked %v, size %d, want %d", err, l.Size(), size+1)
		}
		if v, err := l.GetNote(key, 1<<10); err != nil || !bytes.Equal(v, fmt.Appendf(nil, "entry %d", i)) {
			t.Fatalf("the note of the uncounted entry: %q %v", v, err)
		}
		if at, seen, _ := l.Seen([]byte("replay")); !seen || at != i {
			t.Fatalf("replay key: seen %v at %d, want %d", seen, at, i)
		}
	})
}

// TestInvariantOversizedNoteIsRefusedBeforeItIsCopied: a note longer than
// the caller's limit (planted offline) is refused, not copied whole.
func TestInvariantOversizedNoteIsRefusedBeforeItIsCopied(t *testing.T) {
	conn := tpmtest.StartSwtpm(t).Open(t)
	l := create(t, newDevice(t, conn), t.TempDir())
	key := []byte("request/planted")
	if err := l.PutNotes(ledger.Note{Key: key, Value: make([]byte, 4096)}); err != nil {
		t.Fatal(err)
	}
	if v, err := l.GetNote(key, 4095); !errors.Is(err, ledger.ErrNoteTooLarge) || v != nil {
		t.Fatalf("GetNote over its limit = %d bytes, %v; want ErrNoteTooLarge", len(v), err)
	}
	if v, err := l.GetNote(key, 4096); err != nil || len(v) != 4096 {
		t.Fatalf("GetNote at its limit = %d bytes, %v", len(v), err)
	}
}

// TestInvariantBoundNotesAreCheckedLikeEntries: a note written Bound (a
// request in flight) is bound to the ledger's state: edited, removed, or
// its binding dropped offline, the ledger opens blocked with
// ErrRecordsEdited, which resolve cannot accept; a binding planted for a
// note the ledger never bound blocks too. An unbound note edited offline
// changes nothing. A note written again unbound is free, and a bound
// note cannot be moved aside.
func TestInvariantBoundNotesAreCheckedLikeEntries(t *testing.T) {
	conn := tpmtest.StartSwtpm(t).Open(t)
	d := newDevice(t, conn)
	inFlight, loose := []byte("request/a"), []byte("request/b")
	setup := func(t *testing.T) string {
		dir := t.TempDir()
		l := create(t, d, dir)
		e := ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
		if _, err := l.AppendNoted(e, []byte("warrant"), nil, func(int64) ([]ledger.Note, error) {
			return []ledger.Note{{Key: inFlight, Value: []byte("unfinished"), Bound: true}}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := l.PutNotes(ledger.Note{Key: loose, Value: []byte("done")}); err != nil {
			t.Fatal(err)
		}
		if bound, err := l.NoteBound(inFlight); err != nil || !bound {
			t.Fatalf("NoteBound(in flight) = %v, %v", bound, err)
		}
		if err := l.MoveNote(inFlight, []byte("unmatched/a")); !errors.Is(err, ledger.ErrNoteBound) {
			t.Fatalf("moving a bound note: %v; want ErrNoteBound", err)
		}
		l.Close()
		return dir
	}
	put := func(k, v []byte) func(*bolt.Bucket) error { return func(b *bolt.Bucket) error { return b.Put(k, v) } }
	del := func(k []byte) func(*bolt.Bucket) error { return func(b *bolt.Bucket) error { return b.Delete(k) } }
	dropBinding := func(t *testing.T, dir string) { editBucket(t, dir, "bound-notes", del(inFlight)) }
	for name, c := range map[string]struct {
		bucket  string
		edit    func(*bolt.Bucket) error
		blocked bool
	}{
		"bound note edited":  {"notes", put(inFlight, []byte("done")), true},
		"bound note removed": {"notes", del(inFlight), true},
		"binding dropped":    {"bound-notes", del(inFlight), true},
		"binding planted":    {"bound-notes", put(loose, make([]byte, 32)), true},
		// Only the state's HMAC tells this one: the records agree with
		// the digest written beside them.
		"binding dropped, digest rewritten": {"meta", put([]byte("notes-digest"), make([]byte, 32)), true},
		"unbound note edited":               {"notes", put(loose, []byte("unfinished")), false},
		"unbound note planted":              {"notes", put([]byte("request/c"), []byte("unfinished")), false},
		"nothing changed (control)":         {"notes", func(*bolt.Bucket) error { return nil }, false},
	} {
		t.Run(name, func(t *testing.T) {
			dir := setup(t)
			if c.bucket == "meta" {
				dropBinding(t, dir)
			}
			editBucket(t, dir, c.bucket, c.edit)
			l := open(t, d, dir)
			defer l.Close()
			err := l.Blocked()
			if !c.blocked {
				if err != nil {
					t.Fatalf("blocked: %v", err)
				}
				if bound, _ := l.NoteBound([]byte("request/c")); bound {
					t.Fatal("a planted note reads as bound")
				}
				return
			}
			if !errors.Is(err, ledger.ErrRecordsEdited) {
				t.Fatalf("Blocked() = %v; want ErrRecordsEdited", err)
			}
			if _, err := l.ResolveRollback(t0.Add(time.Hour)); !errors.Is(err, ledger.ErrRecordsEdited) {
				t.Fatalf("resolve accepted edited bound notes: %v", err)
			}
			if err := l.PutNotes(ledger.Note{Key: inFlight, Value: []byte("x")}); err == nil {
				t.Fatal("a blocked ledger took a note")
			}
		})
	}

	t.Run("written again unbound", func(t *testing.T) {
		dir := setup(t)
		l := open(t, d, dir)
		if err := l.PutNotes(ledger.Note{Key: inFlight, Value: []byte("done")}); err != nil {
			t.Fatal(err)
		}
		if bound, err := l.NoteBound(inFlight); err != nil || bound {
			t.Fatalf("NoteBound after an unbound write = %v, %v", bound, err)
		}
		l.Close()
		editBucket(t, dir, "notes", put(inFlight, []byte("edited")))
		l = open(t, d, dir)
		defer l.Close()
		if err := l.Blocked(); err != nil {
			t.Fatalf("an unbound note's edit blocked: %v", err)
		}
	})
}

// TestInvariantNoteLedgerDbCannotStoreIsRefusedBeforeTheJournal: a note
// whose key ledger.db cannot hold (none, or longer than bbolt takes),
// alone or with an entry, is refused before anything is written: the
// journal is unchanged, no entry is appended, and the ledger stays open
// for the next append, which holds after a reopen.
func TestInvariantNoteLedgerDbCannotStoreIsRefusedBeforeTheJournal(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	before, _ := journalRecords(t, dir)
	e := ledger.Entry{Time: t0, Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused}
	for name, key := range map[string][]byte{"no key": nil, "too long a key": make([]byte, bolt.MaxKeySize+1)} {
		if err := l.PutNotes(ledger.Note{Key: key, Value: []byte("v")}); err == nil {
			t.Errorf("a note with %s was stored", name)
		}
		_, err := l.AppendNoted(e, nil, nil, func(int64) ([]ledger.Note, error) {
			return []ledger.Note{{Key: key, Value: []byte("v")}}, nil
		})
		if err == nil {
			t.Errorf("an entry with a note with %s was appended", name)
		}
	}
	if after, _ := journalRecords(t, dir); !bytes.Equal(after, before) {
		t.Fatalf("refused notes changed the journal (%d bytes of records, was %d)", len(after), len(before))
	}
	if err := l.Blocked(); err != nil {
		t.Fatalf("refused notes blocked the ledger: %v", err)
	}
	appendN(t, l, 1)
	l.Close()
	if l = open(t, d, dir); l.Blocked() != nil || l.Size() != 2 {
		t.Fatalf("after a reopen: %d entries, blocked: %v; want 2, open", l.Size(), l.Blocked())
	}
}

// TestInvariantCallerBuffersReusedAfterReturnChangeNothing: once a call
// returns, the ledger holds what the caller passed, though ledger.db
// commits afterwards: a caller that reuses its buffers at once (a replay
// key, a note's key and value) changes neither the stored note nor the
// replay index, then or after a reopen.
func TestInvariantCallerBuffersReusedAfterReturnChangeNothing(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	replayKey, key, value := []byte("replay-1"), []byte("request/1"), []byte("package")
	e := ledger.Entry{Time: t0, Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused}
	if _, err := l.AppendNoted(e, nil, replayKey, func(int64) ([]ledger.Note, error) {
		return []ledger.Note{{Key: key, Value: value}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{replayKey, key, value} {
		copy(b, bytes.Repeat([]byte("X"), len(b)))
	}
	check := func(when string) {
		t.Helper()
		if got, err := l.GetNote([]byte("request/1"), 100); err != nil || string(got) != "package" {
			t.Fatalf("%s: the note reads %q (%v), was stored as %q", when, got, err, "package")
		}
		if _, seen, err := l.Seen([]byte("replay-1")); err != nil || !seen {
			t.Fatalf("%s: the replay key is not seen (%v)", when, err)
		}
	}
	check("right after the call")
	l.Close()
	l = open(t, d, dir)
	defer l.Close()
	check("after a reopen")
}

// TestInvariantJournalRebuildsAfterIndexBucketsWereChanged: notes
// buckets added to or taken from a cleanly closed ledger.db (the clean
// marker binds neither) change which buckets the next transactions
// create, and so what their journal records hold; the journal alone must
// still rebuild the ledger with every acknowledged entry and note.
func TestInvariantJournalRebuildsAfterIndexBucketsWereChanged(t *testing.T) {
	for name, edit := range map[string]func(*bolt.Tx) error{
		"buckets planted": func(tx *bolt.Tx) error {
			for _, b := range []string{"notes", "bound-notes"} {
				if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
					return err
				}
			}
			return nil
		},
		"the notes bucket taken away": func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("notes")) },
	} {
		t.Run(name, func(t *testing.T) {
			d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
			dir := t.TempDir()
			l := create(t, d, dir)
			if err := l.PutNotes(ledger.Note{Key: []byte("before"), Value: []byte("v")}); err != nil {
				t.Fatal(err)
			}
			l.Close()
			editIndex(t, dir, edit)
			l = open(t, d, dir)
			if err := l.Blocked(); err != nil {
				t.Fatalf("the edit is noticed at open, which this test does not cover: %v", err)
			}
			if err := l.PutNotes(ledger.Note{Key: []byte("after"), Value: []byte("v")}); err != nil {
				t.Fatal(err)
			}
			appendN(t, l, 1)
			l.Close()

			if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
				t.Fatal(err)
			}
			l, err := ledger.Open(dir, d.config(t))
			if err != nil {
				t.Fatalf("the journal alone does not rebuild the ledger: %v", err)
			}
			defer l.Close()
			if l.Blocked() != nil || l.Size() != 2 {
				t.Fatalf("rebuilt from the journal: %d entries, blocked: %v; want 2, open", l.Size(), l.Blocked())
			}
			if got, err := l.GetNote([]byte("after"), 10); err != nil || string(got) != "v" {
				t.Fatalf("the note acknowledged after the edit reads %q (%v)", got, err)
			}
		})
	}
}

// editIndex changes ledger.db as someone with the data directory could.
func editIndex(t *testing.T, dir string, edit func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, ledger.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(edit); err != nil {
		t.Fatal(err)
	}
}

// TestMoveNoteOntoItselfKeepsIt: a note moved to the key it is under
// stays there.
func TestMoveNoteOntoItselfKeepsIt(t *testing.T) {
	l := create(t, newDevice(t, tpmtest.StartSwtpm(t).Open(t)), t.TempDir())
	if err := l.PutNotes(ledger.Note{Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if err := l.MoveNote([]byte("k"), []byte("k")); err != nil {
		t.Fatal(err)
	}
	if got, err := l.GetNote([]byte("k"), 10); err != nil || string(got) != "v" {
		t.Fatalf("after a move onto itself the note reads %q (%v)", got, err)
	}
}

// TestLedgerOutlivesAPanickingNotesCallback: a notes callback that
// panics, and a caller that recovers (as net/http recovers a handler),
// leave nothing of the transaction behind: later notes that make
// ledger.db grow, and reads, still finish, and the entry is not there.
func TestLedgerOutlivesAPanickingNotesCallback(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	l, err := ledger.Create(t.TempDir(), d.config(t), t0)
	if err != nil {
		t.Fatal(err)
	}
	// Closed only if nothing hangs: Close would wait for the stuck call.
	e := ledger.Entry{Time: t0, Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused}
	func() {
		defer func() { recover() }()
		l.AppendNoted(e, nil, nil, func(int64) ([]ledger.Note, error) { panic("a bug in the caller") })
	}()
	done := make(chan error, 1)
	go func() {
		big := bytes.Repeat([]byte("x"), 256<<10) // ledger.db grows, so its commit remaps the file
		for i := range 4 {
			if err := l.PutNotes(ledger.Note{Key: []byte{'n', byte(i)}, Value: big}); err != nil {
				done <- err
				return
			}
		}
		_, err := l.GetNote([]byte{'n', 3}, 1<<20)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the ledger hangs: the panicking transaction still holds ledger.db")
	}
	defer l.Close()
	if l.Size() != 1 {
		t.Fatalf("the ledger holds %d entries after the panic, want 1 (its creation)", l.Size())
	}
}

// TestMovedNoteSurvivesARebuild: a moved note's value, read from
// ledger.db's pages, is what the journal holds, though later commits
// rewrite those pages: a rebuild from the journal gives both notes back.
func TestMovedNoteSurvivesARebuild(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	want := []byte("the value of the note, long enough to sit on its own in a page")
	if err := l.PutNotes(ledger.Note{Key: []byte("from"), Value: want}, ledger.Note{Key: []byte("other"), Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if err := l.MoveNote([]byte("from"), []byte("to")); err != nil {
		t.Fatal(err)
	}
	// Changes that rewrite the pages the moved value was read from.
	if err := l.PutNotes(ledger.Note{Key: []byte("from2"), Value: make([]byte, 8192)}); err != nil {
		t.Fatal(err)
	}
	if err := l.MoveNote([]byte("from2"), []byte("from")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	l = open(t, d, dir)
	if err := l.Blocked(); err != nil {
		t.Fatal(err)
	}
	if got, err := l.GetNote([]byte("to"), 1<<20); err != nil || string(got) != string(want) {
		t.Fatalf("moved note reads %q (%v) after a rebuild", got, err)
	}
	if got, err := l.GetNote([]byte("from"), 1<<20); err != nil || len(got) != 8192 {
		t.Fatalf("note moved onto the old key reads %d bytes (%v) after a rebuild", len(got), err)
	}
}

// TestEmptyBoundNoteReopensUnblocked: a bound note with an empty value,
// acknowledged, reads back and leaves a ledger that reopens unblocked,
// as it is and rebuilt from the journal.
func TestEmptyBoundNoteReopensUnblocked(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	if err := l.PutNotes(ledger.Note{Key: []byte("empty"), Value: nil, Bound: true}); err != nil {
		t.Fatal(err)
	}
	if err := l.MoveNote([]byte("empty"), []byte("elsewhere")); !errors.Is(err, ledger.ErrNoteBound) {
		t.Fatalf("moving a bound empty note: %v, want ErrNoteBound", err)
	}
	l.Close()
	for _, rebuild := range []bool{false, true} {
		if rebuild {
			if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
				t.Fatal(err)
			}
		}
		l = open(t, d, dir)
		if err := l.Blocked(); err != nil {
			t.Fatalf("rebuilt %v: a ledger with an acknowledged empty bound note opens blocked: %v", rebuild, err)
		}
		if _, err := l.GetNote([]byte("empty"), 10); err != nil {
			t.Fatalf("rebuilt %v: the empty note reads %v", rebuild, err)
		}
		l.Close()
	}
}
