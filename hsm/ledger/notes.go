package ledger

import (
	"bytes"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// Notes are records the ledger's caller keeps in the ledger's database,
// beside the entries they are about. A note written with an entry
// (AppendNoted) is committed in the entry's own transaction: it is durable
// exactly when the entry is, at the cost of that one commit, so a state
// change that needs an entry and a record of it makes one durable write.
//
// Notes are outside the tree and outside the state's binding: anyone
// holding the data directory can plant or edit them offline, so the caller
// acts on a note only after checking it against the entries it names.
type Note struct {
	Key, Value []byte
}

var bucketNotes = []byte("notes")

// ErrNoNote: no note is stored under the key.
var ErrNoNote = errors.New("no such note")

// AppendNoted is Append, with the notes notes returns for the entry's
// index written in the same transaction: both are stored, or neither.
// Like Append, it returns the index with ErrUncounted when the entry and
// its notes are stored but the TPM counter was not incremented.
func (l *Ledger) AppendNoted(e Entry, subject, replayKey []byte, notes func(index int64) ([]Note, error)) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked != nil {
		return 0, l.blocked
	}
	return l.appendWith(l.state, e, replayKey, func(tx *wtx, base *state) ([]byte, error) {
		ns, err := notes(base.size)
		if err != nil {
			return nil, err
		}
		return subject, putNotes(tx, ns)
	})
}

// PutNotes stores notes in one transaction, replacing any under the same
// keys, and returns once they are durable.
func (l *Ledger) PutNotes(notes ...Note) error {
	return l.update(func(tx *wtx) error { return putNotes(tx, notes) })
}

// MoveNote stores the note under from under to instead, in one
// transaction.
func (l *Ledger) MoveNote(from, to []byte) error {
	return l.update(func(tx *wtx) error {
		b := tx.Bucket(bucketNotes)
		if b == nil || b.Get(from) == nil {
			return ErrNoNote
		}
		v := b.Get(from)
		if err := tx.put(bucketNotes, to, append([]byte(nil), v...)); err != nil {
			return err
		}
		return tx.delete(bucketNotes, from)
	})
}

func putNotes(tx *wtx, notes []Note) error {
	if len(notes) == 0 {
		return nil
	}
	if err := tx.createBucket(bucketNotes); err != nil {
		return err
	}
	for _, n := range notes {
		if err := tx.put(bucketNotes, n.Key, n.Value); err != nil {
			return err
		}
	}
	return nil
}

// ErrNoteTooLarge: the note under the key is longer than the caller's
// limit (a note planted offline; the ledger's own are within it).
var ErrNoteTooLarge = errors.New("the note is larger than such a note can be")

// GetNote returns the note under key, or ErrNoNote, or ErrNoteTooLarge
// if it is longer than limit bytes (checked before it is copied).
func (l *Ledger) GetNote(key []byte, limit int) ([]byte, error) {
	var out []byte
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNotes)
		if b == nil {
			return ErrNoNote
		}
		v := b.Get(key)
		if v == nil {
			return ErrNoNote
		}
		if len(v) > limit {
			return ErrNoteTooLarge
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// NoteKeys returns the keys of the notes whose key starts with prefix, in
// order.
func (l *Ledger) NoteKeys(prefix []byte) ([][]byte, error) {
	var keys [][]byte
	err := l.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketNotes)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		return nil
	})
	return keys, err
}
