package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/hsm/durable"
)

// Files are the ledger's files in the data directory: the journal (the
// durable truth) and the index derived from it. A backup holds both, or
// the journal alone: Open rebuilds the index from it.
var Files = []string{JournalName, FileName}

// Exists reports whether dir holds a ledger: its journal, its index, or
// both. A ledger with either missing is opened (and rebuilt or migrated),
// never created afresh.
func Exists(dir string) (bool, error) {
	for _, name := range Files {
		_, err := os.Lstat(filepath.Join(dir, name))
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	return false, nil
}

// createFiles makes a new ledger's journal (its directory entry synced)
// and index, the journal locked.
func createFiles(dir string, cfg Config) (*Ledger, error) {
	j, err := openJournal(filepath.Join(dir, JournalName), true)
	if err != nil {
		return nil, err
	}
	if err := durable.SyncDir(dir); err != nil {
		j.close()
		return nil, err
	}
	j.key = markerKey(cfg)
	db, err := openDB(filepath.Join(dir, FileName))
	if err != nil {
		j.close()
		return nil, err
	}
	return &Ledger{cfg: cfg, db: db, j: j, dir: dir}, nil
}

// markerKey is the key that signs the journal's clean markers: the state
// key, when the approved image unsealed it.
func markerKey(cfg Config) []byte {
	if len(cfg.StateKey) != StateKeySize {
		return nil
	}
	return cfg.StateKey
}

// abandon closes a ledger whose creation failed before anything was
// committed and removes its files.
func (l *Ledger) abandon() {
	l.db.Close()
	l.j.close()
	for _, name := range Files {
		os.Remove(filepath.Join(l.dir, name))
	}
}

// openFiles locks the journal, checks it, and opens the index: as it is
// when it was closed cleanly at the journal's last record, rebuilt from
// the journal otherwise. A ledger.db without a journal (every commit
// synced in its own file) is migrated: its contents become the journal's
// first record.
func openFiles(dir string, cfg Config) (*Ledger, error) {
	dbPath, jPath := filepath.Join(dir, FileName), filepath.Join(dir, JournalName)
	exists, err := Exists(dir)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, fmt.Errorf("%w (%s): neither %s nor %s is there", ErrNoLedger, dir, JournalName, FileName)
	}
	_, jErr := os.Lstat(jPath)
	created := errors.Is(jErr, fs.ErrNotExist)
	j, err := openJournal(jPath, created)
	if errors.Is(err, fs.ErrExist) { // another process is migrating it
		created = false
		j, err = openJournal(jPath, false)
	}
	if err != nil {
		return nil, err
	}
	// A migration creates the journal; from then on ledger.db is written
	// without syncs, so the journal's name must be durable before any of
	// its records is acknowledged.
	if created {
		if err := durable.SyncDir(dir); err != nil {
			j.close()
			return nil, err
		}
	}
	j.key = markerKey(cfg)
	l := &Ledger{cfg: cfg, j: j, dir: dir}
	if err := l.openIndex(dbPath); err != nil {
		if l.db != nil {
			l.db.Close()
		}
		j.close()
		return nil, err
	}
	return l, nil
}

// openIndex checks the journal and opens ledger.db as l.db: used as it
// is, migrated, or rebuilt.
func (l *Ledger) openIndex(dbPath string) error {
	if err := l.j.scan(nil); err != nil {
		return err
	}
	_, dbErr := os.Lstat(dbPath)
	if l.j.seq == 0 { // no record: a ledger.db of the format before the journal
		if dbErr != nil {
			return fmt.Errorf("%w (%s: its journal is empty and there is no %s)", ErrNoLedger, l.dir, FileName)
		}
		return l.migrate(dbPath)
	}
	// An index not closed cleanly may be torn (bbolt may not even open
	// it): it is not used, only rebuilt. A clean one is checked whole
	// first: a damaged one is rebuilt too, never a crash.
	if dbErr == nil {
		var held uint64
		var err error
		if l.j.clean {
			var db *bolt.DB
			db, held, err = openClean(dbPath, l.j.held)
			if err == nil || errors.Is(err, ErrInUse) {
				l.db = db
				return err
			}
		} else {
			held, err = peekHeld(dbPath)
		}
		if errors.Is(err, ErrInUse) {
			return err
		}
		if err := l.setAside(dbPath, held, l.j.edited()); err != nil {
			return err
		}
	} else if l.j.edited() { // no ledger.db to keep: the edit blocks all the same
		l.blocked = fmt.Errorf("%w (the journal's records are not the ones its clean marker was written over; there is no %s beside it: restore the newest backup of both files)", ErrRecordsEdited, FileName)
	}
	if err := rebuild(l.j, l.dir); err != nil {
		return diskFull(l.dir, err)
	}
	db, err := openDB(dbPath)
	l.db = db
	return err
}

// diskFull says so when err is the data partition running out of space,
// which a raw error from deep in a write does not make plain.
func diskFull(dir string, err error) error {
	if !errors.Is(err, unix.ENOSPC) {
		return err
	}
	return fmt.Errorf("%w: rebuilding ledger.db from the journal: %s", ErrBlocked, fullAdvice(dir))
}

func fullAdvice(dir string) string {
	return fmt.Sprintf("the data partition (%s) is full: copy off and remove old exports, never a kept ledger.db (ledger.db.N.kept holds acknowledged entries the journal may lack: see \"A kept ledger.db\" in the operator guide), then start custodian again", dir)
}

// ErrIndexKept: a ledger.db the journal disagrees with was kept aside
// (ledger.db.<record>.kept) rather than replaced: it may hold the only
// copy of acknowledged entries. The ledger stays blocked while a kept
// file is in the data directory.
var ErrIndexKept = fmt.Errorf("%w: ledger.db held records the ledger journal (%s) does not have (the journal was restored alone from an older backup?); it was kept aside and ledger.db rebuilt from the journal. Do not resolve: stop custodian and follow \"A kept ledger.db\" in the operator guide", ErrBlocked, JournalName)

// setAside moves ledger.db out of the rebuild's way. One the journal
// disagrees with is kept, renamed to ledger.db.<record>.kept, and the
// ledger blocks: one that holds a record newer than the journal's last
// (the journal is older), or any when the journal's records were edited
// under its clean marker (ledger.db is then the true copy). Any other
// (torn by a crash, behind, damaged) is removed first, so that a rebuild
// needs no more room than ledger.db took. held is the record it holds,
// 0 when unreadable.
func (l *Ledger) setAside(dbPath string, held uint64, edited bool) error {
	kept := fmt.Sprintf("%s.%d.kept", dbPath, held)
	_, keptErr := os.Lstat(kept)
	switch {
	case (held <= l.j.held || held == l.j.source) && !edited:
		// held == source: the journal holds only the migration of this
		// very ledger.db (a power cut before its index was updated).
		return removeIndex(dbPath)
	case keptErr == nil: // kept at an earlier start; this one was rebuilt since
		if err := removeIndex(dbPath); err != nil {
			return err
		}
	default:
		if err := os.Rename(dbPath, kept); err != nil {
			return err
		}
		if err := durable.SyncDir(l.dir); err != nil {
			return err
		}
	}
	if edited {
		l.blocked = fmt.Errorf("%w (the journal's records are not the ones its clean marker was written over; %s, the copy the device wrote, is kept as %s: follow \"A kept ledger.db\" in the operator guide to go back to it)", ErrRecordsEdited, FileName, filepath.Base(kept))
	} else {
		l.blocked = fmt.Errorf("%w (%s held journal record %d, the journal ends at %d: kept as %s)", ErrIndexKept, FileName, held, l.j.held, filepath.Base(kept))
	}
	return nil
}

func removeIndex(dbPath string) error {
	if err := os.Remove(dbPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// peekHeld reads which journal record ledger.db holds, without trusting
// it to be whole: it may be torn, and is only looked at.
func peekHeld(dbPath string) (held uint64, err error) {
	err = guarded(func() error {
		db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("%w (%s stayed locked for 2 seconds)", ErrInUse, dbPath)
		}
		if err != nil {
			return err
		}
		defer db.Close()
		held, err = indexHeld(db)
		return err
	})
	return held, err
}

// keptIndexes blocks the ledger while a ledger.db kept aside is in dir:
// what it holds is for an operator to decide, never for a resolve.
func keptIndexes(dir string) error {
	kept, err := filepath.Glob(filepath.Join(dir, FileName+".*.kept*"))
	if err != nil || len(kept) == 0 {
		return nil
	}
	return fmt.Errorf("%w (kept: %s)", ErrIndexKept, filepath.Base(kept[0]))
}

// openClean opens ledger.db as the index the journal's clean marker
// names: it holds record held, and bbolt finds every page of it whole
// (tx.Check). A damaged file is ErrUnreadable, whatever bbolt does with
// it: the pages bolt.Open reads are read plainly first (checkIndexFile),
// so that it never panics holding the file. got is the record it holds,
// 0 if that could not be read.
func openClean(dbPath string, held uint64) (db *bolt.DB, got uint64, err error) {
	err = guarded(func() (err error) {
		if err := checkIndexFile(dbPath); err != nil {
			return err
		}
		if db, err = openDB(dbPath); err != nil {
			return err
		}
		if got, err = indexHeld(db); err != nil {
			got = 0
			return err
		}
		if got != held {
			return fmt.Errorf("%w (%s holds journal record %d, not %d)", ErrUnreadable, FileName, got, held)
		}
		return checkPages(db)
	})
	if err != nil && db != nil {
		guarded(db.Close)
		db = nil
	}
	return db, got, err
}

// checkPages reads every bucket and key of db in this goroutine (where a
// fault reading the memory map is a panic that guarded catches), then
// has bbolt check its pages and free list.
func checkPages(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			return b.ForEach(func(_, _ []byte) error { return nil })
		})
		if err != nil {
			return err
		}
		bad := 0
		for range tx.Check() { // drained: it stops only when read to its end
			bad++
		}
		if bad > 0 {
			return fmt.Errorf("%w (%s: %d of its pages do not check)", ErrUnreadable, FileName, bad)
		}
		return nil
	})
}

// guarded runs fn, which reads ledger.db, turning a panic into
// ErrUnreadable: bbolt panics on a damaged page, and with
// SetPanicOnFault a fault reading its memory map (a bad block) is a
// panic too. ledger.db is an index: a damaged one is rebuilt or refused,
// never a crash.
func guarded(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w (%s: a page of it is damaged)", ErrUnreadable, FileName)
		}
	}()
	return fn()
}

// indexHeld is the journal record the index holds (0: none).
func indexHeld(db *bolt.DB) (uint64, error) {
	var held uint64
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return ErrUnreadable
		}
		if v := meta.Get(metaJournalSeq); len(v) == 8 {
			held = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return held, err
}

// migrate writes every bucket of a ledger.db made before the journal as
// the journal's first record, synced, then marks the index clean.
func (l *Ledger) migrate(dbPath string) error {
	seq := l.j.nextSeq()
	err := guarded(func() (err error) {
		if l.db, err = openDB(dbPath); err != nil {
			return err
		}
		return l.copyToJournal(seq)
	})
	if errors.Is(err, ErrUnreadable) {
		if l.db != nil {
			guarded(l.db.Close)
			l.db = nil
		}
		return fmt.Errorf("%w: %s, migrated alone, was not closed cleanly and is damaged: stop custodian and restore the newest backup of both %s and %s", ErrBlocked, FileName, FileName, JournalName)
	}
	if err != nil {
		return err
	}
	db := l.db
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(metaJournalSeq, u64(seq)) }); err != nil {
		return err
	}
	return l.markClean()
}

// copyToJournal appends every bucket of l.db as journal record seq.
func (l *Ledger) copyToJournal(seq uint64) error {
	return l.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("%w: the database has no ledger", ErrNoLedger)
		}
		var ops []op // they refer to the database's pages while tx is open
		err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			ops = append(ops, op{code: opBucket, bucket: name})
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return fmt.Errorf("%w (%s holds a nested bucket)", ErrUnreadable, name)
				}
				ops = append(ops, op{code: opPut, bucket: name, key: k, val: v})
				return nil
			})
		})
		if err != nil {
			return err
		}
		ops = append(ops, op{code: opPut, bucket: bucketMeta, key: metaJournalSeq, val: u64(seq)})
		return l.j.append(record{kind: kindTx, ops: ops})
	})
}

// rebuild replays the journal into a new index beside ledger.db, syncs
// it once and renames it over ledger.db.
func rebuild(j *journal, dir string) error {
	path := filepath.Join(dir, FileName)
	tmp := path + ".rebuild"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{NoSync: true, NoGrowSync: true, Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("rebuilding %s: %w", FileName, err)
	}
	defer os.Remove(tmp) // a no-op after the rename
	err = j.scan(func(r record) error {
		return db.Update(func(tx *bolt.Tx) error {
			for _, o := range r.ops {
				if err := replayOp(tx, o); err != nil {
					return fmt.Errorf("%w (record %d cannot be replayed: %v)", ErrJournalDamaged, r.seq, err)
				}
			}
			return nil
		})
	})
	if err == nil {
		err = db.Sync()
	}
	if closeErr := db.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

// markClean syncs the index and appends a clean marker naming the
// journal record it holds, unless the journal already ends with one, or
// with one its records no longer match: a new marker would sign the edit.
func (l *Ledger) markClean() error {
	if l.indexing.wait() != nil || l.j.err() != nil || l.j.isClean() || l.j.edited() {
		return nil
	}
	if err := l.db.Sync(); err != nil {
		return err
	}
	return l.j.append(record{kind: kindClean, held: l.j.heldSeq()})
}

// Close syncs the index, marks it clean in the journal, closes it and
// lets go of the journal. An index that is behind the journal (its commit
// failed) is not marked: the next Open rebuilds it. A call in flight
// finishes first, so its record and ledger.db's commit of it come before
// the marker, never between the index's sync and the marker: so Close is
// not to be called from a callback the ledger runs (a notes callback,
// Change's apply), which would wait for itself. Calls after Close fail.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.markClean()
	if closeErr := l.db.Close(); err == nil {
		err = closeErr
	}
	if closeErr := l.j.close(); err == nil {
		err = closeErr
	}
	return err
}

// close cuts the zeros after the records away and closes the journal;
// its lock goes with it.
func (j *journal) close() error {
	j.mu.Lock()
	trimmed := j.trim()
	j.mu.Unlock()
	if err := j.f.Close(); err != nil {
		return err
	}
	return trimmed
}

func (j *journal) isClean() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.clean
}

func (j *journal) heldSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.held
}

// ErrIndexUnclean: ledger.db is not the journal's index as closed
// cleanly, so it may be torn or behind: a process holds the ledger, or
// one stopped without closing it.
var ErrIndexUnclean = errors.New("ledger.db was not closed cleanly (custodian serve holds the ledger, or it stopped without closing it); start custodian serve, or run custodian ledger verify, to rebuild it from the journal")

// lockCleanJournal tells whether ledger.db in dir may be read without
// the journal's lock holder: the journal, shared-locked until release,
// ends with a clean marker, naming the record held that ledger.db must
// hold. It is decided before ledger.db is opened: an index not closed
// cleanly may be torn. A directory without a journal is of the format
// before it, where every commit was synced (held 0: not compared).
func lockCleanJournal(dir string) (held uint64, release func(), err error) {
	f, err := durable.OpenRegular(filepath.Join(dir, JournalName), os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, func() {}, nil
	}
	if err != nil {
		return 0, nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return 0, nil, ErrInUse
		}
		return 0, nil, err
	}
	j := &journal{f: f}
	err = j.walk(nil)
	switch {
	case errors.Is(err, io.EOF) && j.clean:
		return j.held, func() { f.Close() }, nil
	case errors.Is(err, io.EOF), errors.Is(err, errTorn):
		err = ErrIndexUnclean
	}
	f.Close()
	return 0, nil, err
}
