package ledger_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// bbolt's meta page layout (format 2, little-endian on this machine):
// page header (16), then magic, version, page size, flags (4 each), root
// (16), free list (8), high water mark (8), txid (8), FNV-64a of the 56
// bytes before it.
const (
	metaAt       = 16
	metaSummed   = 56
	metaPageSize = metaAt + 8
	metaFreelist = metaAt + 32
	metaHigh     = metaAt + 40
	metaTxid     = metaAt + 48
)

// rechecksumMeta recomputes a meta page's FNV-64a, as anyone can.
func rechecksumMeta(page []byte) {
	h := fnv.New64a()
	h.Write(page[metaAt : metaAt+metaSummed])
	binary.LittleEndian.PutUint64(page[metaAt+metaSummed:], h.Sum64())
}

// TestInvariantCraftedMetaPageLeavesNoOpenFile: a clean ledger.db whose
// second meta page checks (its FNV recomputed, as anyone can) but names a
// page size of 0 and a newer transaction, which bbolt would take and then
// panic on inside bolt.Open, is refused before bbolt maps it: the start
// neither crashes nor keeps the file open, and the index is rebuilt.
func TestInvariantCraftedMetaPageLeavesNoOpenFile(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 2)
	size := l.Size()
	l.Close()

	path := filepath.Join(dir, ledger.FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.LittleEndian.Uint32(data[metaPageSize:]))
	page0, page1 := data[:pageSize], data[pageSize:2*pageSize]
	copy(page1[:metaAt+metaSummed+8], page0)
	binary.LittleEndian.PutUint32(page1[metaPageSize:], 0)
	binary.LittleEndian.PutUint64(page1[metaFreelist:], 2)
	binary.LittleEndian.PutUint64(page1[metaHigh:], 3)
	binary.LittleEndian.PutUint64(page1[metaTxid:], binary.LittleEndian.Uint64(page0[metaTxid:])+100)
	rechecksumMeta(page1)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	before := ledgerFDs(t)
	var l2 *ledger.Ledger
	err = noPanic(func() (err error) {
		l2, err = ledger.Open(dir, d.config(t))
		return err
	})
	if err != nil {
		t.Fatalf("Open of a clean ledger.db whose second meta page names page size 0: %v; want it rebuilt", err)
	}
	if l2.Blocked() != nil || l2.Size() != size {
		t.Fatalf("after the rebuild: %d entries (want %d), blocked %v", l2.Size(), size, l2.Blocked())
	}
	l2.Close()
	if after := ledgerFDs(t); len(after) > len(before) {
		t.Fatalf("after Open and Close of a ledger.db with a crafted meta page, this process still holds %v open", after)
	}
}

// TestInvariantAcknowledgedAppendIsNeverReadAsAbsent: ledger.db commits
// after an append returns; if that commit fails (here the file-size
// limit, as a full or failing card would, after the journal's sync), the
// entry stands in the journal and the ledger blocks: every read says so,
// none answers "no such entry" or "warrant not used" from the index
// without it, and Blocked reports it before anything else is released.
func TestInvariantAcknowledgedAppendIsNeverReadAsAbsent(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 1)

	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	restore := func() { unix.Setrlimit(unix.RLIMIT_FSIZE, &old) }
	defer restore()
	// SIGXFSZ would kill the process at the limit; the write fails instead.
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	*ledger.BeforeIndexCommit = func() {
		// After the journal's sync: ledger.db's page writes now fail.
		unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: 1, Max: old.Max})
	}
	key := []byte("court-a/W-77")
	e := ledger.Entry{Time: t0.Add(time.Hour), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
	n, err := l.Append(e, []byte("w"), key)
	*ledger.BeforeIndexCommit = nil
	blocked := l.Blocked()
	restore()
	if err != nil {
		t.Fatalf("the append, durable in the journal and counted: %v", err)
	}
	if !errors.Is(blocked, ledger.ErrBlocked) {
		t.Fatalf("after ledger.db's commit failed: Blocked() = %v, want ErrBlocked", blocked)
	}
	if _, seen, err := l.Seen(key); !seen && !errors.Is(err, ledger.ErrBlocked) {
		t.Fatalf("Seen(the entry's key) after ledger.db's commit failed: seen %v, %v; want seen or ErrBlocked", seen, err)
	}
	if _, err := l.Entry(n); err != nil && !errors.Is(err, ledger.ErrBlocked) {
		t.Fatalf("Entry(%d) after ledger.db's commit failed: %v; want it or ErrBlocked", n, err)
	}
	l.Close()
	l2 := open(t, d, dir)
	if _, seen, err := l2.Seen(key); err != nil || !seen || l2.Blocked() != nil {
		t.Fatalf("reopened (ledger.db rebuilt): warrant seen %v (%v), blocked %v", seen, err, l2.Blocked())
	}
}

// spend appends a release spending key.
func spend(t *testing.T, l *ledger.Ledger, key []byte) {
	t.Helper()
	e := ledger.Entry{Time: t0.Add(time.Hour), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
	if _, err := l.Append(e, []byte("w"), key); err != nil {
		t.Fatal(err)
	}
}

// TestInvariantIndexWithADamagedStaleMetaPageIsNotDeleted: an image of
// the format before the journal appended to ledger.db alone (its entries
// acknowledged, a warrant spent, the TPM counted); ledger.db's older meta
// page (page 0, the one bbolt is not using) is then damaged, as a torn
// write or a bad sector might, which bbolt itself opens past. The plain
// check before bolt.Open reads the meta page bbolt would use: ledger.db,
// the only copy of that entry, is used or kept, never deleted.
func TestInvariantIndexWithADamagedStaleMetaPageIsNotDeleted(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 2)
	l.Close()
	key := []byte("court-a/W-old")
	acked := oldImageWrites(t, d, dir, func(old *ledger.Ledger) { spend(t, old, key) })
	path := filepath.Join(dir, ledger.FileName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int(binary.LittleEndian.Uint32(data[metaPageSize:]))
	if binary.LittleEndian.Uint64(data[metaTxid:]) > binary.LittleEndian.Uint64(data[pageSize+metaTxid:]) {
		// One more commit of the old image: its newest meta goes to page 1.
		editBucket(t, dir, "meta", func(b *bolt.Bucket) error {
			return b.Put([]byte("journal-seq"), bytes.Clone(b.Get([]byte("journal-seq"))))
		})
		if data, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
	}
	data[metaTxid] ^= 0xff // page 0, the stale meta: its checksum no longer matches
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true}); err != nil {
		t.Fatalf("bbolt itself does not open the file: %v", err)
	} else {
		db.Close()
	}

	l2, err := ledger.Open(dir, d.config(t))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	_, seen, _ := l2.Seen(key)
	kept, _ := filepath.Glob(filepath.Join(dir, ledger.FileName+".*.kept"))
	if !seen && len(kept) == 0 {
		t.Fatalf("ledger.db written past the clean marker by the old image (%d entries acknowledged, a warrant spent), its stale meta page damaged: deleted and rebuilt without it (%d entries, warrant seen %v, nothing kept); blocked: %v",
			acked, l2.Size(), seen, l2.Blocked())
	}
}

// TestConcurrentAppendsReadsAndNotesAreRaceFree: appends, notes and
// reads from several goroutines, then a Close once the writers are done
// (a read may still be under way), under the race detector: the background commit of ledger.db
// shares nothing unguarded, and nothing hangs.
func TestConcurrentAppendsReadsAndNotesAreRaceFree(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	done := make(chan struct{})
	var wg, writers sync.WaitGroup
	wg.Add(3)
	writers.Add(2)
	go func() {
		defer wg.Done()
		defer writers.Done()
		for i := range 15 {
			e := ledger.Entry{Time: t0.Add(time.Duration(i+1) * time.Second), Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK}
			if _, err := l.Append(e, []byte("w"), fmt.Appendf(nil, "court-a/W-%d", i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		defer writers.Done()
		for i := range 15 {
			if err := l.PutNotes(ledger.Note{Key: fmt.Appendf(nil, "records/%d", i), Value: []byte("{}")}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			n := l.Size()
			if _, err := l.Entry(n - 1); err != nil {
				t.Errorf("entry %d of a ledger of %d: %v", n-1, n, err)
				return
			}
			l.Seen([]byte("court-a/W-3"))
			l.NoteKeys([]byte("records/"))
			l.Blocked()
		}
	}()
	writers.Wait()
	close(done)
	closed := make(chan error)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close hangs")
	}
	wg.Wait()
	l2 := open(t, d, dir)
	if l2.Blocked() != nil {
		t.Fatal(l2.Blocked())
	}
}
