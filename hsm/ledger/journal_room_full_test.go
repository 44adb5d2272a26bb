package ledger_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantRoomLeavesLedgerDbTheSpaceANoteNeeds: a package note that
// the data partition has room for in both files (the journal and
// ledger.db) is stored and the ledger stays unblocked. The journal's room
// of zeros must not take the space ledger.db's commit needs: with 2.2 MiB
// free, a 200 KiB note is stored, where a room taken regardless would
// leave its record acknowledged and ledger.db's commit then finding the
// partition full, blocking every later append and read until a
// restart.
func TestInvariantRoomLeavesLedgerDbTheSpaceANoteNeeds(t *testing.T) {
	d, dir, l := ledgerOnASmallPartition(t)
	l.Close()
	fillFS(t, dir, 2200<<10)
	l = open(t, d, dir)
	note := ledger.Note{Key: []byte("package/big"), Value: bytes.Repeat([]byte{'q'}, 200<<10)}
	if err := l.PutNotes(note); err != nil {
		t.Fatalf("a 200 KiB note with 2.2 MiB free: %v", err)
	}
	if err := l.Blocked(); err != nil {
		records, _ := journalRecords(t, dir)
		held := fileSize(t, filepath.Join(dir, ledger.JournalName)) - int64(len(records))
		t.Fatalf("a 200 KiB note with 2.2 MiB free blocked the ledger while its journal held %d bytes of zeros: %v", held, err)
	}
}

// TestInvariantFullPartitionBlocksOnlyWhenItIsFull: appends on a
// partition that fills up end, as without the room, when the partition is
// full; never while the journal holds zeros of its own that ledger.db's
// commit could have had. A block for want of space with room held is
// space the ledger took from itself: a restart gives it back, and the
// first append after it takes it again.
func TestInvariantFullPartitionBlocksOnlyWhenItIsFull(t *testing.T) {
	d := newDevice(t, tpmtest.StartSwtpm(t).Open(t))
	dir := smallFS(t, 8<<20)
	create(t, d, dir).Close()
	fillFS(t, dir, 1500<<10)
	l := open(t, d, dir)
	for i := 0; i < 20000 && l.Blocked() == nil; i++ {
		e := ledger.Entry{Time: t0.Add(time.Duration(l.Size()) * time.Second), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "no-press"}
		if _, err := l.Append(e, []byte("warrant bytes"), nil); err != nil {
			if errors.Is(err, ledger.ErrBlocked) {
				break
			}
			// The journal found the partition full first: no room held.
			t.Skipf("append %d refused before any block, so nothing shows whether room was held: %v", i, err)
		}
	}
	blocked := l.Blocked()
	if blocked == nil {
		t.Fatal("20000 appends on 1.5 MiB: the partition never filled")
	}
	records, _ := journalRecords(t, dir)
	if held := fileSize(t, filepath.Join(dir, ledger.JournalName)) - int64(len(records)); held > 0 {
		t.Fatalf("after %d entries the ledger blocked for want of space while its journal held %d bytes of its own zeros: %v", l.Size(), held, blocked)
	}
}
