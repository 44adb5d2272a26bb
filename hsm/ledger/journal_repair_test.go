package ledger_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantPowerCutDuringRunbookMigrationDoesNotKeep: the operator
// guide's "A damaged journal" (and "A kept ledger.db") starts the device
// with a ledger.db of the journal's format alone; it is migrated into a
// new journal. Its meta bucket still names the old journal's record (here
// well above 1). A power cut after the migration's record 1 is synced and
// before ledger.db's new journal-seq is synced (ledger.db is written
// without syncs; the clean marker is not yet there) leaves record 1 and
// the old ledger.db bytes. Nothing was lost and nothing was restored: the
// next start must open unblocked with every entry, not keep ledger.db
// aside as "newer than the journal" and block.
func TestInvariantPowerCutDuringRunbookMigrationDoesNotKeep(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 5)
	size := l.Size()
	l.Close()

	// The runbook: the journal moved aside, ledger.db started alone.
	jPath := filepath.Join(dir, ledger.JournalName)
	if err := os.Rename(jPath, jPath+".damaged"); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, ledger.FileName)
	before, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	l2 := open(t, d, dir)
	if err := l2.Blocked(); err != nil {
		t.Fatalf("the migration itself: blocked %v", err)
	}
	l2.Close()

	// The power cut: the journal holds its synced record 1 only (the
	// clean marker never written), ledger.db its bytes as they were on
	// disk before the migration's unsynced commit.
	data, starts := journalRecords(t, dir)
	if len(starts) < 2 {
		t.Fatalf("the migrated journal has %d records; want the record and its clean marker", len(starts))
	}
	writeJournal(t, dir, data[:starts[1]])
	if err := os.WriteFile(dbPath, before, 0o600); err != nil {
		t.Fatal(err)
	}

	l3, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatalf("the start after a power cut during the migration: %v", err)
	}
	defer l3.Close()
	kept, _ := filepath.Glob(filepath.Join(dir, ledger.FileName+".*.kept"))
	if err := l3.Blocked(); err != nil || l3.Size() != size || len(kept) > 0 {
		t.Fatalf("after a power cut during the runbook's migration: %d entries (want %d), blocked %v, kept %v; want unblocked, nothing kept",
			l3.Size(), size, err, kept)
	}
}

// TestInvariantIndexAheadUnderCleanMarkerIsNotTrusted: an image of the
// format before the journal reads and writes ledger.db alone and never
// touches ledger.journal nor ledger.db's journal-seq. An A/B update that
// runs the new image once (tryboot: it migrates the ledger and closes it
// cleanly), falls back to the old image (which appends to ledger.db
// alone) and then starts the new image again must keep every
// acknowledged entry across the next power cut: a ledger.db that moved
// past its journal's clean marker is not used as it is.
func TestInvariantIndexAheadUnderCleanMarkerIsNotTrusted(t *testing.T) {
	t.Skip("not fixed yet: the clean marker names only the journal record ledger.db holds, so a ledger.db written past its marker by an image older than the journal is used as it is, and lost at the next rebuild. Naming bbolt's transaction in the marker would make the marker unreadable to the image just before it (its reader takes 8- and 72-byte markers only), which an update's fallback boots")
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 2)
	l.Close()
	// The new image's trial boot left this journal and a clean marker.
	jPath := filepath.Join(dir, ledger.JournalName)
	journal, err := os.ReadFile(jPath)
	if err != nil {
		t.Fatal(err)
	}
	// The old image: ledger.db alone, three entries appended, each synced
	// in ledger.db; the journal and journal-seq untouched.
	acked := oldImageWrites(t, d, dir, func(old *ledger.Ledger) { appendN(t, old, 3) })
	if got, _ := os.ReadFile(jPath); !bytes.Equal(got, journal) {
		t.Fatal("the journal is not the one the trial boot left")
	}

	// The retried update: the new image starts, appends once, and the
	// power is cut before it closes (its clean marker never written).
	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Blocked(); err == nil && l2.Size() == acked {
		appendN(t, l2, 1)
		acked++
	}
	first := l2.Blocked()
	l2.Close()
	data, starts := journalRecords(t, dir)
	writeJournal(t, dir, data[:starts[len(starts)-1]])

	l3, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	if first == nil && (l3.Blocked() != nil || l3.Size() != acked) {
		t.Fatalf("ledger.db ahead of its journal was used as clean and opened unblocked; after the next power cut: %d entries of %d acknowledged, blocked %v",
			l3.Size(), acked, l3.Blocked())
	}
}

// oldImageWrites plays an image of the format before the journal on dir
// (as TestInvariantIndexAheadUnderCleanMarkerIsNotTrusted does): write
// runs on ledger.db alone, which then holds the journal record it held
// before, the journal untouched. It returns the entries acknowledged.
func oldImageWrites(t *testing.T, d *device, dir string, write func(*ledger.Ledger)) int64 {
	t.Helper()
	jPath := filepath.Join(dir, ledger.JournalName)
	var held []byte
	editBucket(t, dir, "meta", func(b *bolt.Bucket) error {
		held = append([]byte(nil), b.Get([]byte("journal-seq"))...)
		return nil
	})
	if err := os.Rename(jPath, jPath+".aside"); err != nil {
		t.Fatal(err)
	}
	old := open(t, d, dir)
	write(old)
	acked := old.Size()
	old.Close()
	if err := os.Remove(jPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(jPath+".aside", jPath); err != nil {
		t.Fatal(err)
	}
	editBucket(t, dir, "meta", func(b *bolt.Bucket) error { return b.Put([]byte("journal-seq"), held) })
	return acked
}

// TestInvariantEditedJournalRunbookEndsUnblocked: a journal edited under
// its clean marker keeps the true ledger.db aside and blocks as records
// edited. The operator guide's "A kept ledger.db", followed literally
// (journal renamed to ledger.journal.old, the rebuilt ledger.db deleted,
// the kept file renamed to ledger.db, start), must end unblocked with
// every acknowledged entry and none of the edit.
func TestInvariantEditedJournalRunbookEndsUnblocked(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	size := l.Size()
	l.Close()
	data, starts := journalRecords(t, dir)
	rec := starts[len(starts)-2]
	i := bytes.Index(data[rec:], []byte("no-press"))
	if i < 0 {
		t.Fatal("the last append's record does not hold its reason")
	}
	copy(data[rec+i:], "no-prexx")
	rehash(data, rec)
	writeJournal(t, dir, data)

	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	blocked := l2.Blocked()
	l2.Close()
	if !errors.Is(blocked, ledger.ErrRecordsEdited) {
		t.Fatalf("the edited journal: blocked %v; want records edited", blocked)
	}
	kept, _ := filepath.Glob(filepath.Join(dir, ledger.FileName+".*.kept"))
	if len(kept) != 1 || !strings.Contains(blocked.Error(), filepath.Base(kept[0])) {
		t.Fatalf("kept %v; the message %q must name the one kept file", kept, blocked)
	}
	jPath := filepath.Join(dir, ledger.JournalName)
	if err := os.Rename(jPath, jPath+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(kept[0], filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	l3 := open(t, d, dir)
	if err := l3.Blocked(); err != nil || l3.Size() != size {
		t.Fatalf("after the runbook: %d entries (want %d), blocked %v", l3.Size(), size, err)
	}
	e, err := l3.Entry(size - 1)
	if err != nil || bytes.Contains(e, []byte("no-prexx")) {
		t.Fatalf("the newest entry after the runbook (%v) holds the edit: %s", err, e)
	}
}

// TestInvariantEditUnderCleanMarkerWithoutIndexIsRefused: a journal whose
// records were changed under its clean marker blocks as records edited
// even with ledger.db deleted as well (anyone holding the card can), and
// no later Close signs the edit with a fresh marker. Here the edit is an
// unbound note, which the state does not bind: only the marker tells it.
func TestInvariantEditUnderCleanMarkerWithoutIndexIsRefused(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	if err := l.PutNotes(ledger.Note{Key: []byte("request/r1"), Value: []byte(`{"state":"pending"}`)}); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1)
	l.Close()

	data, starts := journalRecords(t, dir)
	at := bytes.Index(data, []byte(`"pending"`))
	if at < 0 {
		t.Fatal("the journal does not hold the note")
	}
	copy(data[at:], `"granted"`)
	rec := 0
	for _, s := range starts {
		if s < at {
			rec = s
		}
	}
	rehash(data, rec)
	writeJournal(t, dir, data)
	if err := os.Remove(filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}

	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	blocked := l2.Blocked()
	if blocked == nil {
		appendN(t, l2, 1)
	}
	l2.Close()
	l3 := open(t, d, dir)
	note, _ := l3.GetNote([]byte("request/r1"), 1<<10)
	if blocked == nil && l3.Blocked() == nil {
		t.Fatalf("a journal edited under its clean marker, ledger.db deleted: opened unblocked, and after one append and a Close the edit is signed and adopted (note now %s)", note)
	}
}

// ledgerFDs lists the files named ledger.db* this process holds open.
func ledgerFDs(t *testing.T) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("open files are listed only under /proc/self/fd: %v", err)
	}
	var out []string
	for _, fd := range fds {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.Contains(filepath.Base(p), ledger.FileName) {
			out = append(out, p)
		}
	}
	return out
}

// damageFreelists breaks the free-list page each bbolt meta page of
// ledger.db names (its count, as a bad block might), leaving the metas'
// checksums whole: bbolt would panic reading it inside bolt.Open; the
// plain check before it refuses the file first.
func damageFreelists(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, ledger.FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.LittleEndian.Uint32(data[metaPageSize:]))
	for m := 0; m < 2; m++ {
		free := int(binary.LittleEndian.Uint64(data[m*pageSize+metaFreelist:]))
		binary.LittleEndian.PutUint16(data[free*pageSize+10:], 0xfffe)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestInvariantDamagedIndexLeavesNoOpenFile: a clean ledger.db whose
// free list is damaged would make bbolt panic inside bolt.Open; the plain
// check before it refuses the file and it is rebuilt. The file must not
// stay open: the daemon would hold a deleted
// ledger.db for its whole life, its blocks still taken on the data
// partition, which the rebuild beside it needs.
func TestInvariantDamagedIndexLeavesNoOpenFile(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close()
	damageFreelists(t, dir)
	before := ledgerFDs(t)
	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Blocked(); err != nil || l2.Size() != 4 {
		t.Fatalf("after the rebuild: %d entries, blocked %v; want 4, unblocked", l2.Size(), err)
	}
	l2.Close()
	if after := ledgerFDs(t); len(after) > len(before) {
		t.Fatalf("after Open and Close of a ledger.db bbolt panicked on, this process still holds %v open", after)
	}
}

// TestInvariantDamagedIndexOnANearlyFullDiskOpens: with the free space
// of a nearly full data partition, a power cut's rebuild opens (the
// unclean ledger.db is removed first). A bad block in a clean ledger.db's
// free list must open the same way, not fail as "the data partition is
// full" because the removed ledger.db is still held open.
func TestInvariantDamagedIndexOnANearlyFullDiskOpens(t *testing.T) {
	d, dir, l := ledgerOnASmallPartition(t)
	appendN(t, l, 1)
	l.Close()
	fillFS(t, dir, 256<<10)
	damageFreelists(t, dir)
	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatalf("Open of a clean ledger.db with a damaged free list, 256 KiB free: %v; want it rebuilt in the room it took", err)
	}
	defer l2.Close()
	if err := l2.Blocked(); err != nil || l2.Size() != 2 {
		t.Fatalf("after the rebuild: %d entries, blocked %v; want 2, unblocked", l2.Size(), err)
	}
}

// TestInvariantRunbookMigrationOfATornIndexDoesNotCrash: the operator
// guide's "A damaged journal" starts the device with ledger.db alone,
// which may not have been closed cleanly (the journal was found damaged
// at a start after a power cut: ledger.db is written without syncs, so
// its pages may be torn). The guide expects such a start to open blocked
// at worst ("If it opens blocked … restore the newest backup"); the
// migration reads every page of ledger.db, and bbolt panics on a torn
// one: Open must not crash the process.
func TestInvariantRunbookMigrationOfATornIndexDoesNotCrash(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close()
	data, starts := journalRecords(t, dir)
	writeJournal(t, dir, data[:starts[len(starts)-1]]) // a power cut: no clean marker
	tearIndex(t, dir)                                  // and ledger.db torn

	// The runbook: the damaged journal moved aside, ledger.db alone.
	jPath := filepath.Join(dir, ledger.JournalName)
	if err := os.Rename(jPath, jPath+".damaged"); err != nil {
		t.Fatal(err)
	}
	err := noPanic(func() error {
		l2, err := ledger.Open(dir, d.config(t))
		if err == nil {
			t.Logf("opened: %d entries, blocked %v", l2.Size(), l2.Blocked())
			l2.Close()
		}
		return err
	})
	if err != nil && strings.Contains(err.Error(), "panicked") {
		t.Fatalf("the runbook's start with a torn ledger.db alone crashes the process: %v", err)
	}
	t.Logf("Open: %v", err)
}

// TestInvariantFullDiskAdviceKeepsAcknowledgedEntries: the operator
// guide's row for "the data partition (…) is full" says to copy off and
// remove what is not the ledger ("a kept ledger.db, old exports"), since
// "nothing acknowledged is lost, it is in the journal". A ledger.db is
// kept exactly when it holds entries the journal lacks. Followed
// literally on a device whose journal was restored alone, the row removes
// the only copy of acknowledged entries on the device, and the ledger
// then opens as a plain rollback that resolve-rollback accepts.
func TestInvariantFullDiskAdviceKeepsAcknowledgedEntries(t *testing.T) {
	d, dir, l := ledgerOnASmallPartition(t)
	l.Close()
	jPath := filepath.Join(dir, ledger.JournalName)
	backup, err := os.ReadFile(jPath)
	if err != nil {
		t.Fatal(err)
	}
	l = open(t, d, dir)
	appendN(t, l, 3)
	acked := l.Size()
	l.Close()
	if err := os.WriteFile(jPath, backup, 0o600); err != nil { // the journal alone, older
		t.Fatal(err)
	}
	fillFS(t, dir, 256<<10)

	_, err = ledger.Open(dir, d.config(t))
	if err == nil || !strings.Contains(err.Error(), "is full") {
		t.Skipf("the partition did not fill at the rebuild: %v", err)
	}
	// The advice must keep the kept ledger.db, and send the operator to
	// its runbook.
	if !strings.Contains(err.Error(), `"A kept ledger.db"`) {
		t.Fatalf("the full-disk error does not send the operator to \"A kept ledger.db\": %v", err)
	}
	// The row, literally: what is not the ledger (the filler, as old
	// exports) copied off and removed; the kept ledger.db stays.
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	kept, _ := filepath.Glob(filepath.Join(dir, ledger.FileName+".*.kept"))
	if !errors.Is(l2.Blocked(), ledger.ErrIndexKept) || len(kept) != 1 {
		t.Fatalf("the full-disk row followed: %d of %d acknowledged entries on the device, kept %v, blocked %v; want blocked with the kept ledger.db",
			l2.Size(), acked, kept, l2.Blocked())
	}
}

// TestInvariantPlantedJournalIsNeverFollowed: someone holding the card
// replaces ledger.journal with a symbolic link to another file, or with a
// named pipe. Open refuses it, naming what it is, and never writes
// through the link (a torn tail is cut: that would empty the link's
// target); SeenIn (custodian warrant verify) refuses it too, without
// waiting on the pipe.
func TestInvariantPlantedJournalIsNeverFollowed(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	for _, plant := range []struct {
		name string
		make func(t *testing.T, path string)
		kind string
	}{
		{"link to another file", func(t *testing.T, path string) {
			victim := filepath.Join(t.TempDir(), "victim")
			if err := os.WriteFile(victim, []byte("not a journal, and not the ledger's to cut"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, path); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if data, _ := os.ReadFile(victim); string(data) != "not a journal, and not the ledger's to cut" {
					t.Errorf("the link's target was changed through the journal: %q", data)
				}
			})
		}, "a symbolic link"},
		{"named pipe", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "a named pipe"},
	} {
		t.Run(plant.name, func(t *testing.T) {
			dir := t.TempDir()
			l := create(t, d, dir)
			appendN(t, l, 1)
			l.Close()
			path := filepath.Join(dir, ledger.JournalName)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			plant.make(t, path)
			if _, err := ledger.Open(dir, d.config(t)); !errors.Is(err, durable.ErrNotRegular) || !strings.Contains(err.Error(), plant.kind) {
				t.Errorf("Open with %s as the journal: %v; want it refused as %s", plant.name, err, plant.kind)
			}
			if _, err := ledger.SeenIn(dir, []byte("k")); !errors.Is(err, durable.ErrNotRegular) {
				t.Errorf("SeenIn with %s as the journal: %v; want it refused", plant.name, err)
			}
		})
	}
}
