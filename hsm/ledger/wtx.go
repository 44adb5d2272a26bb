package ledger

import (
	"bytes"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
)

// wtx is a ledger write transaction. Every change goes through it, so
// that the journal record lists them all.
//
// A change is only recorded at first: reads see it through the recorded
// changes over a read transaction of ledger.db, and ledger.db makes the
// changes in its commit after the journal's sync, off the caller's path.
// So each change is checked as it is recorded against what bbolt would
// refuse: the journal holds nothing ledger.db cannot make. A read the
// recorded changes cannot answer (a cursor over a bucket the transaction
// changed) asks for the whole bbolt write transaction ([wtx.full]); from
// then on every change is made in it as it is recorded.
type wtx struct {
	db   *bolt.DB
	read *bolt.Tx // ledger.db as its last commit left it; nil once full
	tx   *bolt.Tx // the write transaction holding the changes; nil until full
	ops  []op
}

// beginTx starts a write transaction. The caller ends it with rollback or
// commitIndex, after which no value it read may be used.
func beginTx(db *bolt.DB) (*wtx, error) {
	read, err := db.Begin(false)
	if err != nil {
		return nil, err
	}
	return &wtx{db: db, read: read, ops: make([]op, 0, 16)}, nil // an append makes about ten
}

// appendOnlyBuckets have keys that only ever grow, filled densely:
// bbolt's default leaves pages half empty for inserts that never come.
var appendOnlyBuckets = map[string]bool{string(bucketEntries): true, string(bucketHashes): true, string(bucketSalts): true}

func (w *wtx) put(bucket, key, val []byte) error {
	return w.record(op{code: opPut, bucket: bucket, key: key, val: val})
}

func (w *wtx) delete(bucket, key []byte) error {
	return w.record(op{code: opDelete, bucket: bucket, key: key})
}

// createBucket creates bucket unless it exists.
func (w *wtx) createBucket(bucket []byte) error {
	if w.hasBucket(bucket) {
		return nil
	}
	return w.record(op{code: opBucket, bucket: bucket})
}

// record adds o to the transaction: made in the write transaction once
// there is one, checked otherwise. The transaction keeps its own copy of
// the key and value, since ledger.db commits after the caller, who may
// reuse its buffers, has gone on. (Bucket names are the package's.)
func (w *wtx) record(o op) error {
	kv := make([]byte, len(o.key)+len(o.val))
	n := copy(kv, o.key)
	copy(kv[n:], o.val)
	o.key, o.val = kv[:n:n], kv[n:]
	var err error
	if w.tx != nil {
		err = applyOp(w.tx, o)
	} else {
		err = w.check(o)
	}
	if err != nil {
		return err
	}
	w.ops = append(w.ops, o)
	return nil
}

// check refuses o where bbolt's Put, Delete or CreateBucket would, and a
// change without a key, which the journal's reader refuses.
// (bbolt also refuses a key that names a nested bucket; the ledger makes
// none, and a ledger.db that holds one fails its commit, which blocks the
// ledger until Open rebuilds it from the journal.)
func (w *wtx) check(o op) error {
	switch {
	case len(o.bucket) == 0:
		return bolt.ErrBucketNameRequired
	case o.code == opBucket && w.hasBucket(o.bucket):
		return bolt.ErrBucketExists
	case o.code == opBucket:
		return nil
	case !w.hasBucket(o.bucket):
		return fmt.Errorf("the ledger has no %q bucket", o.bucket)
	case len(o.key) == 0:
		return bolt.ErrKeyRequired
	case len(o.key) > bolt.MaxKeySize:
		return bolt.ErrKeyTooLarge
	case int64(len(o.val)) > bolt.MaxValueSize:
		return bolt.ErrValueTooLarge
	}
	return nil
}

// get returns bucket's value under key as the transaction has it so far,
// or nil. It may refer to ledger.db's pages: it is not kept after the
// transaction ends (record copies what is put).
func (w *wtx) get(bucket, key []byte) []byte {
	if w.tx != nil {
		return getIn(w.tx, bucket, key)
	}
	for i := len(w.ops) - 1; i >= 0; i-- {
		o := w.ops[i]
		switch {
		case !bytes.Equal(o.bucket, bucket):
		case o.code == opBucket:
			return nil // created in this transaction: empty before it
		case bytes.Equal(o.key, key) && o.code == opPut:
			return o.val
		case bytes.Equal(o.key, key):
			return nil
		}
	}
	return getIn(w.read, bucket, key)
}

func getIn(tx *bolt.Tx, bucket, key []byte) []byte {
	if b := tx.Bucket(bucket); b != nil {
		return b.Get(key)
	}
	return nil
}

func (w *wtx) hasBucket(bucket []byte) bool {
	if w.tx != nil {
		return w.tx.Bucket(bucket) != nil
	}
	return w.read.Bucket(bucket) != nil || slices.ContainsFunc(w.ops, func(o op) bool {
		return o.code == opBucket && bytes.Equal(o.bucket, bucket)
	})
}

// ReadHashes reads stored Merkle hashes as the transaction has them.
func (w *wtx) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return readHashes(indexes, func(key []byte) []byte { return w.get(bucketHashes, key) })
}

// full returns the bbolt write transaction holding the changes so far,
// for reads that need all of bbolt: cursors over what the transaction
// changed, or code shared with Open's checks.
func (w *wtx) full() (*bolt.Tx, error) {
	if w.tx != nil {
		return w.tx, nil
	}
	tx, err := w.db.Begin(true) // beside the read transaction: bbolt allows one writer among readers
	if err != nil {
		return nil, err
	}
	for _, o := range w.ops {
		if err := applyOp(tx, o); err != nil {
			tx.Rollback()
			return nil, err
		}
	}
	w.read.Rollback()
	w.read, w.tx = nil, tx
	return tx, nil
}

// endRead ends the read transaction, once nothing more is read.
func (w *wtx) endRead() {
	if w.read != nil {
		w.read.Rollback()
		w.read = nil
	}
}

// rollback ends the transaction without a change to ledger.db.
func (w *wtx) rollback() {
	w.endRead()
	if w.tx != nil {
		w.tx.Rollback()
	}
}

// commitIndex makes the transaction's changes in ledger.db, after the
// journal holds them.
func (w *wtx) commitIndex() error {
	w.endRead()
	tx := w.tx
	if tx == nil {
		var err error
		if tx, err = w.db.Begin(true); err != nil {
			return err
		}
		for _, o := range w.ops {
			if err := applyOp(tx, o); err != nil {
				tx.Rollback()
				return err
			}
		}
	}
	return tx.Commit()
}

// replayOp makes o in tx as a rebuild from the journal does: a bucket is
// made if the record takes it for granted, and left if it already
// exists. A transaction sees buckets through ledger.db, which an intruder
// with the data directory may have given extra buckets or taken some
// from, under a clean marker that binds neither; the records written
// after that must still replay on their own.
func replayOp(tx *bolt.Tx, o op) error {
	if _, err := tx.CreateBucketIfNotExists(o.bucket); err != nil || o.code == opBucket {
		return err
	}
	return applyOp(tx, o)
}

// applyOp makes o in tx: for a commit, and after replayOp for a replay.
func applyOp(tx *bolt.Tx, o op) error {
	if o.code == opBucket {
		_, err := tx.CreateBucket(o.bucket)
		return err
	}
	b := tx.Bucket(o.bucket)
	if b == nil {
		return fmt.Errorf("the ledger has no %q bucket", o.bucket)
	}
	if appendOnlyBuckets[string(o.bucket)] {
		b.FillPercent = 0.95
	}
	if o.code == opDelete {
		return b.Delete(o.key)
	}
	return b.Put(o.key, o.val)
}
