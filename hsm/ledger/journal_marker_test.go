package ledger

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestMarkerNamesTheIndexTransactionUnderItsHMAC: a clean marker reads
// as clean under its key with the bbolt transaction it names, and a
// marker whose transaction ID was changed does not; a keyed marker
// written before markers named one (72 bytes) still reads as clean,
// naming none, so a journal of that time opens as it did.
func TestMarkerNamesTheIndexTransactionUnderItsHMAC(t *testing.T) {
	key := bytes.Repeat([]byte{7}, StateKeySize)
	for _, c := range []struct {
		name          string
		txid, written uint64 // the marker's HMAC is over txid; written is the ID it carries
		clean         bool
	}{
		{"names its transaction", 9, 9, true},
		{"written before the field", 0, 0, true},
		{"transaction ID changed", 9, 10, false},
		{"transaction ID added to an older marker", 0, 9, false},
		{"transaction ID taken out", 9, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var data bytes.Buffer
			_, sum, err := writeRecord(&data, record{kind: kindTx, seq: 1, ops: []op{{code: opBucket, bucket: bucketMeta}}})
			if err != nil {
				t.Fatal(err)
			}
			chain := chainNext([sha256.Size]byte{}, sum[:])
			marker := record{kind: kindClean, seq: 2, held: 1, txid: c.written, chain: chain[:], mac: markerMAC(key, 1, c.txid, chain[:])}
			if _, _, err := writeRecord(&data, marker); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), JournalName)
			if err := os.WriteFile(path, data.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			j := &journal{f: f, key: key}
			if err := j.walk(nil); !errors.Is(err, io.EOF) {
				t.Fatalf("walk: %v", err)
			}
			if !j.marked || j.clean != c.clean || j.txid != c.written {
				t.Fatalf("marked %v, clean %v, names transaction %d; want marked, clean %v, %d", j.marked, j.clean, j.txid, c.clean, c.written)
			}
		})
	}
}
