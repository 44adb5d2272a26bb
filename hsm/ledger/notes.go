package ledger

import (
	"bytes"
	"crypto/sha256"
	"errors"

	bolt "go.etcd.io/bbolt"
)

// Notes are records the ledger's caller keeps in the ledger's database,
// beside the entries they are about. A note written with an entry
// (AppendNoted) is committed in the entry's own transaction: it is durable
// exactly when the entry is, at the cost of that one commit, so a state
// change that needs an entry and a record of it makes one durable write.
//
// Notes are outside the tree: anyone holding the data directory can plant
// or edit them offline. A note written unbound is outside the state's
// binding too, so the caller acts on it only after checking it against the
// entries it names. A note written Bound is bound like the entries until
// it is written again unbound: Open refuses a ledger whose bound notes are
// not there as written (ErrRecordsEdited), and a note planted or edited
// offline is never bound (NoteBound).
type Note struct {
	Key, Value []byte
	// Bound binds the value into the ledger's state: for the few records
	// whose loss or edit would mislead the caller, such as a request in
	// flight.
	Bound bool
}

var (
	bucketNotes = []byte("notes")
	// bucketBoundNotes maps each bound note's key to the SHA-256 of its
	// value. The state binds a digest of it (state.notes).
	bucketBoundNotes = []byte("bound-notes")
)

// Errors of notes.
var (
	ErrNoNote    = errors.New("no such note")
	ErrNoteBound = errors.New("the note is bound to the ledger's state and cannot be moved")
)

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
		_, err = putNotes(tx, ns, base)
		return subject, err
	})
}

// PutNotes stores notes in one transaction, replacing any under the same
// keys, and returns once they are durable. A blocked ledger refuses: its
// state cannot be bound again until it is resolved.
func (l *Ledger) PutNotes(notes ...Note) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked != nil {
		return l.blocked
	}
	next := l.state.clone()
	err := l.update(func(tx *wtx) error {
		rebound, err := putNotes(tx, notes, &next)
		if err != nil || !rebound {
			return err
		}
		return l.putState(tx, &next)
	})
	if err == nil {
		l.state = next
	}
	return err
}

// MoveNote stores the note under from under to instead, in one
// transaction. A bound note stays where it is (ErrNoteBound).
func (l *Ledger) MoveNote(from, to []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked != nil {
		return l.blocked
	}
	return l.update(func(tx *wtx) error {
		v := tx.get(bucketNotes, from)
		if v == nil {
			return ErrNoNote
		}
		if tx.get(bucketBoundNotes, from) != nil || tx.get(bucketBoundNotes, to) != nil {
			return ErrNoteBound
		}
		if bytes.Equal(from, to) {
			return nil // the note is already there
		}
		if err := tx.put(bucketNotes, to, v); err != nil {
			return err
		}
		return tx.delete(bucketNotes, from)
	})
}

// putNotes stores notes in tx, binding or unbinding each as it says. It
// reports whether the bound notes changed, with s.notes then their new
// digest: the caller stores s in the same transaction.
func putNotes(tx *wtx, notes []Note, s *state) (rebound bool, err error) {
	if len(notes) == 0 {
		return false, nil
	}
	for _, b := range [][]byte{bucketNotes, bucketBoundNotes} {
		if err := tx.createBucket(b); err != nil {
			return false, err
		}
	}
	for _, n := range notes {
		if err := tx.put(bucketNotes, n.Key, n.Value); err != nil {
			return false, err
		}
		switch {
		case n.Bound:
			sum := sha256.Sum256(n.Value)
			err = tx.put(bucketBoundNotes, n.Key, sum[:])
			rebound = true
		case tx.get(bucketBoundNotes, n.Key) != nil:
			err = tx.delete(bucketBoundNotes, n.Key)
			rebound = true
		}
		if err != nil {
			return false, err
		}
	}
	if !rebound {
		return false, nil
	}
	full, err := tx.full() // a cursor over the bound notes just written
	if err != nil {
		return false, err
	}
	s.notes, err = boundNotesDigest(full)
	return true, err
}

// boundNotesDigest is the digest the state binds: SHA-256 over each bound
// note's key and value digest, in key order; zero when none is bound.
func boundNotesDigest(tx *bolt.Tx) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	b := tx.Bucket(bucketBoundNotes)
	if b == nil {
		return d, nil
	}
	h, n := sha256.New(), 0
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) != sha256.Size {
			return d, recordsEdited("the digest kept for bound note %q is damaged", k)
		}
		h.Write(u64(uint64(len(k))))
		h.Write(k)
		h.Write(v)
		n++
	}
	if n > 0 {
		d = [sha256.Size]byte(h.Sum(nil))
	}
	return d, nil
}

// checkBoundNotes reports a bound note that is not stored as it was
// written: removed, or another value.
func checkBoundNotes(tx *bolt.Tx) error {
	bound := tx.Bucket(bucketBoundNotes)
	if bound == nil {
		return nil
	}
	notes := tx.Bucket(bucketNotes)
	c := bound.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var value []byte
		if notes != nil {
			value = notes.Get(k)
		}
		if sum := sha256.Sum256(value); value == nil || !bytes.Equal(sum[:], v) {
			return recordsEdited("bound note %q was removed or edited", k)
		}
	}
	return nil
}

// NoteBound reports whether the note under key is bound: written Bound by
// this ledger and not written unbound since. Open checked its value.
func (l *Ledger) NoteBound(key []byte) (bool, error) {
	var bound bool
	err := l.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBoundNotes)
		bound = b != nil && b.Get(key) != nil
		return nil
	})
	return bound, err
}

// ErrNoteTooLarge: the note under the key is longer than the caller's
// limit (a note planted offline; the ledger's own are within it).
var ErrNoteTooLarge = errors.New("the note is larger than such a note can be")

// GetNote returns the note under key, or ErrNoNote, or ErrNoteTooLarge
// if it is longer than limit bytes (checked before it is copied).
func (l *Ledger) GetNote(key []byte, limit int) ([]byte, error) {
	var out []byte
	err := l.view(func(tx *bolt.Tx) error {
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
	err := l.view(func(tx *bolt.Tx) error {
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
