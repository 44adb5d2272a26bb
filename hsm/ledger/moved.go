package ledger

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// A ledger.db committed to after the journal's clean marker (openClean's
// moved: an image of the format before the journal appends to ledger.db
// alone and leaves its journal-seq as it was) holds what the journal
// lacks, which the next rebuild would drop. It is checked at Open as any
// index is (the state's HMAC, the tree, the counter); if nothing blocks,
// what it holds beyond the journal is written into the journal as one
// transaction record before anything else, so that a rebuild makes it
// again: nothing is trusted that a migration of it alone would not be.
// If something blocks, nothing more is written to either file: a resolve
// or a note over an index the journal cannot make would lose it all the
// same.

// adoptMoved runs at Open, after its checks, for a ledger.db that moved.
func (l *Ledger) adoptMoved() {
	if l.blocked == nil {
		if err := l.journalIndex(); err != nil {
			l.blocked = fmt.Errorf("%w: %v, and what it holds beyond the journal could not be written into the journal (%v)", ErrBlocked, l.moved, err)
		}
	}
	if l.blocked != nil {
		l.blocked = fmt.Errorf("%w; %v: it may hold the only copy of acknowledged entries, so nothing is written over it. Do not resolve: follow \"ledger.db written past its journal\" in the operator guide", l.blocked, l.moved)
		l.j.block(l.blocked)
	}
}

// journalIndex appends, as one transaction record, what turns a replay
// of the journal into ledger.db.
func (l *Ledger) journalIndex() error {
	tmp := filepath.Join(l.dir, FileName+".rebuild")
	replayed, err := replay(l.j, tmp)
	if err != nil {
		return diskFull(l.dir, err)
	}
	defer os.Remove(tmp)
	defer replayed.Close()
	ops, err := indexDiff(replayed, l.db)
	if err != nil {
		return err
	}
	return l.update(func(w *wtx) error {
		w.ops = append(w.ops, ops...) // ledger.db holds them already
		return nil
	})
}

// indexDiff lists the operations that turn from's buckets into to's.
// A bucket of from that to lacks cannot be among them: no operation
// removes a bucket.
func indexDiff(from, to *bolt.DB) (ops []op, err error) {
	err = from.View(func(ftx *bolt.Tx) error {
		return to.View(func(ttx *bolt.Tx) error {
			err := ftx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				if ttx.Bucket(name) == nil {
					return fmt.Errorf("%s has no %q bucket", FileName, name)
				}
				return nil
			})
			if err != nil {
				return err
			}
			return ttx.ForEach(func(name []byte, b *bolt.Bucket) error {
				name = bytes.Clone(name)
				var fc *bolt.Cursor
				if fb := ftx.Bucket(name); fb != nil {
					fc = fb.Cursor()
				} else {
					ops = append(ops, op{code: opBucket, bucket: name})
				}
				more, err := diffBucket(ops, name, fc, b.Cursor())
				ops = more
				return err
			})
		})
	})
	return ops, err
}

// diffBucket appends the puts and deletes that turn bucket's keys under
// from (nil: none) into those under to, both in key order.
func diffBucket(ops []op, bucket []byte, from, to *bolt.Cursor) ([]op, error) {
	var fk, fv []byte
	if from != nil {
		fk, fv = from.First()
	}
	tk, tv := to.First()
	for fk != nil || tk != nil {
		if (fk != nil && fv == nil) || (tk != nil && tv == nil) {
			return nil, fmt.Errorf("%w (%q holds a nested bucket)", ErrUnreadable, bucket)
		}
		switch c := compareKeys(fk, tk); {
		case c < 0:
			ops = append(ops, op{code: opDelete, bucket: bucket, key: bytes.Clone(fk)})
			fk, fv = from.Next()
		case c > 0:
			ops = append(ops, op{code: opPut, bucket: bucket, key: bytes.Clone(tk), val: bytes.Clone(tv)})
			tk, tv = to.Next()
		default:
			if !bytes.Equal(fv, tv) {
				ops = append(ops, op{code: opPut, bucket: bucket, key: bytes.Clone(tk), val: bytes.Clone(tv)})
			}
			fk, fv = from.Next()
			tk, tv = to.Next()
		}
	}
	return ops, nil
}

// compareKeys orders two cursors' keys, nil (a cursor at its end) last.
func compareKeys(a, b []byte) int {
	switch {
	case a == nil:
		return 1
	case b == nil:
		return -1
	}
	return bytes.Compare(a, b)
}
