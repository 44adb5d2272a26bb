package ledger_test

import (
	"os"
	"path/filepath"
	"testing"

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
