package ledger_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// noPanic runs fn and turns a panic into an error, so that a test can say
// what panicked instead of dying with it.
func noPanic(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panicked: %v", r)
		}
	}()
	return fn()
}

// TestInvariantDamagedCleanIndexIsRebuilt: ledger.db is an index of the
// journal; the documented promise is that a damaged one (a card's bad
// block, an edit of its pages) is rebuilt from the journal at Open, even
// when the journal ends with a clean marker naming it. Open must neither
// panic nor refuse.
func TestInvariantDamagedCleanIndexIsRebuilt(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	l.Close() // clean marker: ledger.db is used as it is at the next Open
	tearIndex(t, dir)
	var l2 *ledger.Ledger
	err := noPanic(func() (err error) {
		l2, err = ledger.Open(dir, d.config(t))
		return err
	})
	if err != nil {
		t.Fatalf("Open of a damaged ledger.db beside a whole journal: %v; want it rebuilt from the journal", err)
	}
	defer l2.Close()
	if err := l2.Blocked(); err != nil || l2.Size() != 4 {
		t.Fatalf("after the rebuild: %d entries, blocked %v; want 4, unblocked", l2.Size(), err)
	}
}

// TestInvariantSeenInNeverReadsAnUncleanIndex: after a power cut during a
// commit (ledger.db written without syncs, so its pages may be torn),
// custodian warrant verify (SeenIn) must answer ErrIndexUnclean without
// reading ledger.db's pages: it must not panic on them.
func TestInvariantSeenInNeverReadsAnUncleanIndex(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	if _, err := l.Append(ledger.Entry{Time: t0, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}, []byte("w"), []byte("court-a/W-1")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	data, starts := journalRecords(t, dir)
	writeJournal(t, dir, data[:starts[len(starts)-1]]) // killed before Close
	tearIndex(t, dir)                                  // and the power cut tore ledger.db
	err := noPanic(func() error {
		_, err := ledger.SeenIn(dir, []byte("court-a/W-1"))
		return err
	})
	if !errors.Is(err, ledger.ErrIndexUnclean) {
		t.Fatalf("SeenIn of a torn index not closed cleanly: %v; want ErrIndexUnclean", err)
	}
}

// TestInvariantCraftedJournalTailDoesNotHangOpen: a journal whose tail
// after its last whole record is 4 MiB of fake record headers, each with
// a length that runs exactly to the file's end and a wrong hash, is the
// torn tail of nothing: Open must decide so (cut it, or refuse it) in
// about the time it takes to read 4 MiB, not hash the rest of the file
// once per header (quadratic: hundreds of gigabytes). A deadline far
// beyond a linear scan's time stands for "it does not hang".
func TestInvariantCraftedJournalTailDoesNotHangOpen(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	l.Close()
	data, _ := journalRecords(t, dir)
	const tail = 4 << 20
	end := len(data) + tail
	crafted := append(data, 'X') // the bad record where the tail starts
	for len(crafted)+16 <= end {
		p := len(crafted)
		crafted = append(crafted, "CLJ1"...)
		crafted = binary.BigEndian.AppendUint64(crafted, uint64(end-p-12-32))
		crafted = append(crafted, "pad!"...)
	}
	crafted = append(crafted, make([]byte, end-len(crafted))...)
	writeJournal(t, dir, crafted)

	done := make(chan error, 1)
	go func() {
		err := noPanic(func() error {
			l, err := ledger.Open(dir, d.config(t))
			if err == nil {
				l.Close()
			}
			return err
		})
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("Open of the crafted tail: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("Open of a journal with a 4 MiB crafted tail did not return within 60 s (a linear scan takes milliseconds)")
	}
}

// TestInvariantRebuildKeepsTheIndexItReplaces: an operator who restores
// an older journal alone beside a ledger.db that was closed cleanly and
// holds every acknowledged entry does not lose them: Open never replaces
// a ledger.db the journal disagrees with, it keeps it aside (and blocks),
// so the entries after the backup are still in the data directory.
func TestInvariantRebuildKeepsTheIndexItReplaces(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 2)
	l.Close()
	backup, _ := journalRecords(t, dir) // the journal alone, backed up
	l = open(t, d, dir)
	appendN(t, l, 3) // acknowledged: entries 3, 4 and 5
	l.Close()
	index, err := os.ReadFile(filepath.Join(dir, ledger.FileName))
	if err != nil {
		t.Fatal(err)
	}

	// A bad block in the journal's middle; ledger.db is whole.
	data, starts := journalRecords(t, dir)
	data[starts[2]+40] ^= 1
	writeJournal(t, dir, data)
	_, err = ledger.Open(dir, d.config(t))
	if !errors.Is(err, ledger.ErrJournalDamaged) || strings.Contains(err.Error(), "or the journal alone") {
		t.Fatalf("Open of a damaged journal: %v; want ErrJournalDamaged, not offering the journal alone", err)
	}

	// What the message once offered: the journal alone from the newest
	// backup.
	writeJournal(t, dir, backup)
	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	blocked := l2.Blocked()
	l2.Close()
	if !errors.Is(blocked, ledger.ErrIndexKept) {
		t.Errorf("after the journal alone was restored beside a newer ledger.db: blocked %v; want ErrIndexKept", blocked)
	}
	l3, err := ledger.Open(dir, d.config(t)) // and at every start after it
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l3.ResolveRollback(time.Now()); !errors.Is(l3.Blocked(), ledger.ErrIndexKept) || err == nil {
		t.Errorf("the next start: blocked %v, resolve %v; want ErrIndexKept, which resolve refuses", l3.Blocked(), err)
	}
	l3.Close()

	kept := ""
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && bytes.Equal(b, index) {
			kept = e.Name()
		}
	}
	if kept == "" {
		t.Fatal("Open replaced a cleanly closed ledger.db holding entries 3-5 with one rebuilt from an older journal: the only copy of three acknowledged entries is destroyed")
	}

	// The operator guide's way back: the journal moved aside, the kept
	// ledger.db put back alone, migrated into a new journal.
	if err := os.Rename(filepath.Join(dir, ledger.JournalName), filepath.Join(dir, ledger.JournalName+".old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, kept), filepath.Join(dir, ledger.FileName)); err != nil {
		t.Fatal(err)
	}
	l4 := open(t, d, dir)
	defer l4.Close()
	if err := l4.Blocked(); err != nil || l4.Size() != 6 {
		t.Fatalf("the kept ledger.db put back alone: %d entries, blocked %v; want 6, unblocked", l4.Size(), err)
	}
}

// TestInvariantMigratedJournalIsInTheDirectoryBeforeAnAck: migrating a
// data directory of the format before the journal creates ledger.journal
// and, from then on, writes ledger.db without syncs. Until the data
// directory is fsynced after that creation, a power cut may lose the
// journal's name (its records synced in a file no directory names),
// leaving a ledger.db alone whose commits were never synced. No append
// may be acknowledged before the directory is synced after the journal's
// creation.
func TestInvariantMigratedJournalIsInTheDirectoryBeforeAnAck(t *testing.T) {
	needStrace(t)
	dir, spec := tracedLedger(t, false)
	if err := os.Remove(filepath.Join(dir, ledger.JournalName)); err != nil {
		t.Fatal(err)
	}
	editBucket(t, dir, "meta", func(b *bolt.Bucket) error { return b.Delete([]byte("journal-seq")) })

	log := filepath.Join(t.TempDir(), "strace.log")
	cmd := exec.Command("strace", "-f", "-qq", "-y", "-s", "64", "-o", log,
		"-e", "trace=openat,write,fsync,fdatasync", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "CRASH_LEDGER_DIR="+dir, "CRASH_TPM="+spec, "CRASH_APPENDS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("appender under strace: %v\n%s", err, out)
	}
	trace, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	created, dirSynced := false, false
	for _, line := range strings.Split(string(trace), "\n") {
		switch {
		case strings.Contains(line, "openat(") && strings.Contains(line, ledger.JournalName+`"`) && strings.Contains(line, "O_CREAT"):
			created = true
		case created && (strings.Contains(line, "fsync(") || strings.Contains(line, "fdatasync(")) && strings.Contains(line, "<"+dir+">"):
			dirSynced = true
		case created && strings.Contains(line, `"acked `):
			if !dirSynced {
				t.Fatal("an append was acknowledged after the migration created ledger.journal and before the data directory was synced: a power cut can lose the journal's name")
			}
			return
		}
	}
	t.Fatalf("the trace shows no creation of the journal followed by an acknowledgement (created %v):\n%s", created, trace)
}

// rehash recomputes the SHA-256 of the journal record at start in data,
// as anyone who edits it can (the format is public and unkeyed).
func rehash(data []byte, start int) {
	size := int(binary.BigEndian.Uint64(data[start+4:]))
	end := start + 12 + size
	sum := sha256.Sum256(data[start:end])
	copy(data[end:], sum[:])
}

// TestInvariantJournalEditUnderCleanMarkerIsNoticed: an entry edited in
// the journal (its record's hash recomputed) under an intact clean marker
// is refused at the first Open after it, as records edited, not weeks
// later at the next rebuild: the marker carries a chain of every record's
// hash under an HMAC only this device's approved image makes.
func TestInvariantJournalEditUnderCleanMarkerIsNoticed(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 2)
	l.Close()
	index, err := os.ReadFile(filepath.Join(dir, ledger.FileName))
	if err != nil {
		t.Fatal(err)
	}

	data, starts := journalRecords(t, dir)
	rec := starts[len(starts)-2] // the last append (the clean marker follows)
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
	if !errors.Is(blocked, ledger.ErrStateMismatch) {
		// Show that the edit was there all along: a crash (no clean
		// marker) makes the next Open rebuild from it.
		data, starts = journalRecords(t, dir)
		writeJournal(t, dir, data[:starts[len(starts)-1]])
		l3, err := ledger.Open(dir, d.config(t))
		if err != nil {
			t.Fatal(err)
		}
		defer l3.Close()
		t.Fatalf("an entry edited in the journal under its clean marker opened unblocked (%v); after a crash the same journal blocks with: %v", blocked, l3.Blocked())
	}
	if !strings.Contains(blocked.Error(), "clean marker") {
		t.Errorf("blocked %v; want it to say the journal was edited under its clean marker", blocked)
	}
	l3, err := ledger.Open(dir, d.config(t)) // the Close did not sign the edit
	if err != nil {
		t.Fatal(err)
	}
	again := l3.Blocked()
	l3.Close()
	if !errors.Is(again, ledger.ErrStateMismatch) {
		t.Errorf("the start after the edit was noticed: blocked %v; want it refused as edited again", again)
	}
	kept, err := os.ReadFile(filepath.Join(dir, ledger.FileName+".4.kept"))
	if err != nil || !bytes.Equal(kept, index) {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("the ledger.db the edited journal disagrees with is not kept as it was (%v): %v", err, entries)
	}
}

// smallFS mounts a tmpfs of size bytes for the test, or skips saying why.
func smallFS(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.Itoa(size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("a full disk needs a small file system, and mounting a tmpfs is not permitted here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// fillFS leaves about free bytes free on the file system of dir.
func fillFS(t *testing.T, dir string, free int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	avail := int64(st.Bavail) * st.Bsize
	if avail <= free {
		t.Fatalf("only %d bytes free, want more than %d", avail, free)
	}
	if err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, avail-free), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestInvariantCrashOnANearlyFullDiskStillOpens: a data directory that
// opens and runs with little space left still opens after a power cut:
// the rebuild removes the unclean ledger.db it never reads before it
// writes the new one, so it needs no more room than ledger.db took.
func TestInvariantCrashOnANearlyFullDiskStillOpens(t *testing.T) {
	d, dir, l := ledgerOnASmallPartition(t)
	appendN(t, l, 1)
	l.Close()
	info, err := os.Stat(filepath.Join(dir, ledger.FileName))
	if err != nil {
		t.Fatal(err)
	}
	fillFS(t, dir, 256<<10)
	open(t, d, dir).Close() // runs on the full disk: clean, nothing to write

	data, starts := journalRecords(t, dir)
	writeJournal(t, dir, data[:starts[len(starts)-1]]) // a power cut: no clean marker
	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatalf("after a power cut with 256 KiB free (ledger.db is %d bytes), Open fails: %v", info.Size(), err)
	}
	defer l2.Close()
	if err := l2.Blocked(); err != nil || l2.Size() != 2 {
		t.Fatalf("after the rebuild: %d entries, blocked %v; want 2, unblocked", l2.Size(), err)
	}
}

// TestInvariantDamageOfTheLastTwoRecordsIsNotATornTail: a power cut tears
// only the record being written, the last one; a record followed by the
// header of another was synced before it, so its bytes cannot be torn.
// Damage to an acknowledged append and to the clean marker after it (a
// bad block across both, or an edit) is refused as ErrJournalDamaged,
// which resolve-rollback cannot accept, and nothing is cut away.
func TestInvariantDamageOfTheLastTwoRecordsIsNotATornTail(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 2)
	l.Close()
	data, starts := journalRecords(t, dir)
	last := starts[len(starts)-2]
	data[last+40] ^= 1     // the acknowledged append
	data[len(data)-1] ^= 1 // the clean marker's hash; its header is whole
	writeJournal(t, dir, data)

	l2, err := ledger.Open(dir, d.config(t))
	if err == nil {
		t.Logf("opened: %d entries, blocked: %v", l2.Size(), l2.Blocked())
		l2.Close()
	}
	if after, _ := journalRecords(t, dir); !bytes.Equal(after, data) {
		t.Errorf("Open cut %d bytes of a damaged journal (an acknowledged append and the marker after it): the evidence is gone", len(data)-len(after))
	}
	if !errors.Is(err, ledger.ErrJournalDamaged) {
		t.Errorf("Open of a journal whose last two records are damaged: %v; want ErrJournalDamaged", err)
	}
}

// ledgerOnASmallPartition creates a ledger on an 8 MiB partition of its
// own, holding three packages of a few hundred kilobytes (notes) beside
// its init entry: a data directory that fills up quickly.
func ledgerOnASmallPartition(t *testing.T) (*device, string, *ledger.Ledger) {
	t.Helper()
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := smallFS(t, 8<<20)
	l := create(t, d, dir)
	for i := range 3 {
		if err := l.PutNotes(ledger.Note{Key: []byte("package/" + strconv.Itoa(i)), Value: bytes.Repeat([]byte{'p'}, 400<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	return d, dir, l
}
