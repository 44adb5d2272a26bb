package ledger

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestTransactionReadsItsOwnChanges: inside a transaction, get answers
// what the changes recorded so far left, before and after the
// transaction asks for the whole bbolt transaction; after the commit,
// ledger.db holds exactly that. Random transactions over a few buckets
// and keys are compared with a model.
func TestTransactionReadsItsOwnChanges(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	buckets := [][]byte{[]byte("a"), []byte("b"), []byte("c"), []byte("d")}
	keys := [][]byte{[]byte("k0"), []byte("k1"), []byte("k2")}
	model := map[string]map[string]string{"a": {}}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("a")); return err }); err != nil {
		t.Fatal(err)
	}
	var w *wtx
	defer func() { // an open transaction would keep db.Close waiting after a failure
		if w != nil {
			w.rollback()
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		w, err = beginTx(db)
		if err != nil {
			t.Fatal(err)
		}
		want := cloneModel(model)
		fullAt := rng.IntN(16) // at 10 or later: never
		for step := range 10 {
			if step == fullAt {
				if _, err := w.full(); err != nil {
					t.Fatal(err)
				}
			}
			bucket, key := buckets[rng.IntN(len(buckets))], keys[rng.IntN(len(keys))]
			what := changeAt(t, w, want, bucket, key, rng)
			for _, b := range buckets {
				for _, k := range keys {
					if got, ok := w.get(b, k), want[string(b)][string(k)]; !sameValue(got, ok, want[string(b)], k) {
						t.Fatalf("round %d, after %s (full from step %d): get(%s, %s) = %q, want %q", round, what, fullAt, b, k, got, ok)
					}
				}
			}
		}
		if err := w.commitIndex(); err != nil {
			t.Fatal(err)
		}
		model = want
		if got := readModel(t, db); fmt.Sprint(got) != fmt.Sprint(model) {
			t.Fatalf("round %d: ledger.db holds %v after the commit, want %v", round, got, model)
		}
	}
}

// changeAt makes one random change in w and in want, and says what it was.
func changeAt(t *testing.T, w *wtx, want map[string]map[string]string, bucket, key []byte, rng *rand.Rand) string {
	t.Helper()
	m, exists := want[string(bucket)]
	var err error
	var what string
	switch rng.IntN(3) {
	case 0:
		what = fmt.Sprintf("createBucket(%s)", bucket)
		err = w.createBucket(bucket)
		if !exists {
			want[string(bucket)] = map[string]string{}
		}
	case 1:
		val := fmt.Appendf(nil, "v%d", rng.IntN(1000))
		what = fmt.Sprintf("put(%s, %s, %s)", bucket, key, val)
		err = w.put(bucket, key, val)
		if exists {
			m[string(key)] = string(val)
		}
	default:
		what = fmt.Sprintf("delete(%s, %s)", bucket, key)
		err = w.delete(bucket, key)
		if exists {
			delete(m, string(key))
		}
	}
	if (err == nil) != (exists || what[0] == 'c') {
		t.Fatalf("%s in a transaction where the bucket exists=%v: %v", what, exists, err)
	}
	return what
}

func sameValue(got []byte, want string, bucket map[string]string, key []byte) bool {
	_, ok := bucket[string(key)]
	return (got != nil) == ok && bytes.Equal(got, []byte(want))
}

func cloneModel(m map[string]map[string]string) map[string]map[string]string {
	out := make(map[string]map[string]string, len(m))
	for b, kv := range m {
		out[b] = make(map[string]string, len(kv))
		for k, v := range kv {
			out[b][k] = v
		}
	}
	return out
}

func readModel(t *testing.T, db *bolt.DB) map[string]map[string]string {
	t.Helper()
	got := map[string]map[string]string{}
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			got[string(name)] = map[string]string{}
			return b.ForEach(func(k, v []byte) error {
				got[string(name)][string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestInvariantTransactionRefusesWhatLedgerDbWould: a change is checked
// as it is recorded against each refusal of bbolt's Put, Delete and
// CreateBucket and of the journal's reader, so that no journal record
// holds a change ledger.db then fails to make (which would block the
// ledger until a restart) or Open cannot read back.
func TestInvariantTransactionRefusesWhatLedgerDbWould(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("a")); return err }); err != nil {
		t.Fatal(err)
	}
	a, k, v := []byte("a"), []byte("k"), []byte("v")
	for _, c := range []struct {
		name string
		o    op
		ok   bool
	}{
		{"a bucket that exists", op{code: opBucket, bucket: a}, false},
		{"a bucket without a name", op{code: opBucket}, false},
		{"a put without a bucket", op{code: opPut, bucket: []byte("none"), key: k, val: v}, false},
		{"a put without a key", op{code: opPut, bucket: a, val: v}, false},
		{"a put of too long a key", op{code: opPut, bucket: a, key: make([]byte, bolt.MaxKeySize+1), val: v}, false},
		{"a delete without a key", op{code: opDelete, bucket: a}, false},
		{"a delete without a bucket", op{code: opDelete, bucket: []byte("none"), key: k}, false},
		{"a new bucket", op{code: opBucket, bucket: []byte("new")}, true},
		{"a put of the longest key", op{code: opPut, bucket: a, key: make([]byte, bolt.MaxKeySize), val: v}, true},
		{"a put of an empty value", op{code: opPut, bucket: a, key: k}, true},
		{"a put of a value longer than the record's buffer", op{code: opPut, bucket: a, key: k, val: bytes.Repeat([]byte("v"), 1<<20)}, true},
		{"a delete of a missing key", op{code: opDelete, bucket: a, key: k}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, err := beginTx(db)
			if err != nil {
				t.Fatal(err)
			}
			defer w.rollback()
			if err := w.check(c.o); (err == nil) != c.ok {
				t.Fatalf("recording it: %v, want accepted = %v", err, c.ok)
			}
			if !c.ok {
				return
			}
			full, err := db.Begin(true)
			if err != nil {
				t.Fatal(err)
			}
			defer full.Rollback()
			if err := applyOp(full, c.o); err != nil {
				t.Fatalf("accepted, but bbolt refuses to make it: %v", err)
			}
			var frame bytes.Buffer
			if _, _, err := writeRecord(&frame, record{kind: kindTx, seq: 1, ops: []op{c.o}}); err != nil {
				t.Fatal(err)
			}
			payload := frame.Bytes()[frameHeader : frame.Len()-32]
			back, err := parseRecord(payload)
			if err != nil {
				t.Fatalf("accepted, but the journal cannot read it back: %v", err)
			}
			if got := normal(back).ops; len(got) != 1 || !reflect.DeepEqual(got[0], normal(record{ops: []op{c.o}}).ops[0]) {
				t.Fatalf("accepted, but the journal reads back %+v", got)
			}
		})
	}
}
