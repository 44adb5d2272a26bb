package ledger

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
)

// Verify re-reads the whole ledger and checks what Append promised: every
// entry parses in canonical form, consumed the next counter value, is not
// older than its predecessor, and hashes to the stored Merkle tree. It
// catches entries edited, removed or reordered in the database.
func (l *Ledger) Verify() error {
	return l.view(func(tx *bolt.Tx) error {
		size := l.sizeIn(tx)
		entries := tx.Bucket(bucketEntries)
		if got := int64(entries.Stats().KeyN); got != size {
			return fmt.Errorf("the ledger says %d entries but holds %d", size, got)
		}
		var prev *Entry
		var rebuilt memHashes
		for i := int64(0); i < size; i++ {
			data := entries.Get(u64(uint64(i)))
			e, err := ParseEntry(data)
			if err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			if err := checkSequence(prev, e); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			if err := rebuilt.add(tx, i, data); err != nil {
				return fmt.Errorf("entry %d: %w", i, err)
			}
			prev = e
		}
		return nil
	})
}

func checkSequence(prev, e *Entry) error {
	if prev == nil {
		return nil
	}
	if e.Counter != prev.Counter+1 && e.Kind != KindResolve {
		return fmt.Errorf("counter %d after %d", e.Counter, prev.Counter)
	}
	if e.Time.Before(prev.Time) {
		return fmt.Errorf("time %s before the previous entry's %s", e.Time, prev.Time)
	}
	return nil
}

// memHashes is the Merkle tree rebuilt from the entries alone.
type memHashes []tlog.Hash

func (m memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		out[i] = m[idx]
	}
	return out, nil
}

// add hashes entry i into the rebuilt tree and compares every hash it
// produces with the one stored: an edited, missing or reordered entry, or
// a damaged interior hash, shows up here.
func (m *memHashes) add(tx *bolt.Tx, i int64, data []byte) error {
	hashes, err := tlog.StoredHashes(i, data, *m)
	if err != nil {
		return err
	}
	first := tlog.StoredHashIndex(0, i)
	indexes := make([]int64, len(hashes))
	for k := range hashes {
		indexes[k] = first + int64(k)
	}
	stored, err := txHashReader{tx}.ReadHashes(indexes)
	if err != nil {
		return err
	}
	for k := range hashes {
		if !bytes.Equal(stored[k][:], hashes[k][:]) {
			return fmt.Errorf("stored Merkle hash %d does not match the entries", indexes[k])
		}
	}
	*m = append(*m, hashes...)
	return nil
}
