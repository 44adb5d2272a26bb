package ledger

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// FuzzJournal feeds arbitrary bytes to the journal's reader: it never
// panics, each record it accepts writes back as the same record, and it
// stops at the first one it does not.
func FuzzJournal(f *testing.F) {
	var seed bytes.Buffer
	for _, r := range []record{
		{kind: kindTx, seq: 1, ops: []op{{code: opBucket, bucket: bucketMeta}, {code: opPut, bucket: bucketMeta, key: []byte("k"), val: []byte("v")}}},
		{kind: kindTx, seq: 2, ops: []op{{code: opDelete, bucket: bucketMeta, key: []byte("k")}}},
		{kind: kindClean, seq: 3, held: 2},
	} {
		if _, _, err := writeRecord(&seed, r); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(seed.Bytes())
	f.Add(seed.Bytes()[:seed.Len()-5])
	f.Add([]byte(journalMagic + "\x00\x00\x00\x00\x00\x00\x00\x09T"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &scanner{f: bytes.NewReader(data), end: int64(len(data))}
		for {
			r, err := s.next()
			if errors.Is(err, io.EOF) || errors.Is(err, errTorn) {
				return
			}
			if err != nil {
				if !errors.Is(err, ErrJournalDamaged) {
					t.Fatalf("an error that is not ErrJournalDamaged: %v", err)
				}
				return
			}
			var again bytes.Buffer
			if _, _, err := writeRecord(&again, r); err != nil {
				t.Fatal(err)
			}
			back := &scanner{f: bytes.NewReader(again.Bytes()), end: int64(again.Len()), last: r.seq - 1}
			got, err := back.next()
			if err != nil {
				t.Fatalf("a record read back does not read again: %v", err)
			}
			if !reflect.DeepEqual(normal(got), normal(r)) {
				t.Fatalf("record %d reads back as %+v, was %+v", r.seq, got, r)
			}
		}
	})
}

// normal makes empty fields comparable: nil and empty are one field.
func normal(r record) record {
	ops := make([]op, len(r.ops))
	for i, o := range r.ops {
		ops[i] = op{o.code, append([]byte{}, o.bucket...), append([]byte{}, o.key...), append([]byte{}, o.val...)}
	}
	r.ops = ops
	r.chain, r.mac = append([]byte{}, r.chain...), append([]byte{}, r.mac...)
	r.before = [32]byte{} // where it was read, not what it holds
	return r
}
