package ledger_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestJournalKeepsRoomWhileOpenAndNoneAtRest: while the ledger is open,
// appends write into zeros the journal already holds, so its size (and
// with it the inode an fdatasync would have to commit) stays as it is;
// closed, the journal ends with its last record, as any reader of the
// format (an image before this one included) expects.
func TestJournalKeepsRoomWhileOpenAndNoneAtRest(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 1)
	path := filepath.Join(dir, ledger.JournalName)
	before := fileSize(t, path)
	appendN(t, l, 5)
	if after := fileSize(t, path); after != before {
		t.Errorf("5 appends changed the open journal's size from %d to %d bytes; want them written into its room", before, after)
	}
	records, _ := journalRecords(t, dir)
	if len(records) >= int(before) {
		t.Errorf("the open journal holds %d bytes of records in %d bytes: no room after them", len(records), before)
	}
	l.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if records, _ := journalRecords(t, dir); !bytes.Equal(data, records) {
		t.Errorf("the closed journal is %d bytes, its records %d: zeros left after them", len(data), len(records))
	}
}

// TestInvariantCrashLeavesRoomThatOpenCuts: a power cut leaves the zeros
// after the records; the next Open takes them for the end of the journal
// (every acknowledged entry there, nothing damaged) and cuts them.
func TestInvariantCrashLeavesRoomThatOpenCuts(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := t.TempDir()
	l := create(t, d, dir)
	appendN(t, l, 3)
	size := l.Size()
	l.Close()
	records, _ := journalRecords(t, dir)
	// As a crash leaves it: the records, then zeros never written over.
	writeJournal(t, dir, append(bytes.Clone(records), make([]byte, 1<<20)...))
	tearIndex(t, dir)
	l2 := open(t, d, dir)
	if err := l2.Blocked(); err != nil || l2.Size() != size {
		t.Fatalf("after a crash that left the journal's room: %d entries (want %d), blocked %v", l2.Size(), size, err)
	}
	appendN(t, l2, 1)
	l2.Close()
	data, err := os.ReadFile(filepath.Join(dir, ledger.JournalName))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := journalRecords(t, dir); !bytes.Equal(data, again) || !bytes.HasPrefix(data, records) {
		t.Fatalf("the journal after a crash's room was cut and one more append: %d bytes, records %d", len(data), len(again))
	}
}

// TestInvariantNearlyFullPartitionStillAppends: on a partition too full
// for the journal's room, an append writes its record past the end, as
// without room, and is acknowledged and kept.
func TestInvariantNearlyFullPartitionStillAppends(t *testing.T) {
	d, dir, l := ledgerOnASmallPartition(t)
	l.Close()
	fillFS(t, dir, 256<<10)
	l = open(t, d, dir)
	size := l.Size()
	appendN(t, l, 3)
	l.Close()
	if l := open(t, d, dir); l.Blocked() != nil || l.Size() != size+3 {
		t.Fatalf("after 3 appends with 256 KiB free: %d entries (want %d), blocked %v", l.Size(), size+3, l.Blocked())
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Size()
}
