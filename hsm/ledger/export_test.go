package ledger

import (
	"os"
	"path/filepath"
)

// JournalFromIndex rewrites the journal in dir from its ledger.db (one
// snapshot record, as anyone holding the SD card can write: the format is
// public), then deletes ledger.db, so that the next Open rebuilds it from
// the journal alone. An edit made to ledger.db this way is an edit of the
// journal.
func JournalFromIndex(dir string) error {
	if err := os.Remove(filepath.Join(dir, JournalName)); err != nil {
		return err
	}
	j, err := openJournal(filepath.Join(dir, JournalName), true)
	if err != nil {
		return err
	}
	l := &Ledger{j: j, dir: dir}
	if err := l.migrate(filepath.Join(dir, FileName)); err != nil {
		return err
	}
	if err := l.Close(); err != nil {
		return err
	}
	return os.Remove(filepath.Join(dir, FileName))
}

// SyncJournal is the journal's sync, for a test that leaves it out.
var SyncJournal = &syncJournal

// BeforeIndexCommit runs between the journal's sync and the index's
// commit, when set.
var BeforeIndexCommit = &beforeIndexCommit

// WaitIndexed returns once ledger.db holds the newest transaction.
func (l *Ledger) WaitIndexed() { l.indexing.wait() }
