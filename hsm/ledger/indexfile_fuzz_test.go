package ledger

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FuzzIndexFile feeds arbitrary files to the plain check of ledger.db's
// meta pages and free list: it never panics, and a file it accepts never
// makes bolt.Open panic (which would leave the file open for the
// process's life).
func FuzzIndexFile(f *testing.F) {
	f.Add(smallBoltFile(f))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, file []byte) {
		if why := checkBoltPages(bytes.NewReader(file), uint64(len(file))); why != "" {
			return
		}
		path := filepath.Join(t.TempDir(), FileName)
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("bolt.Open panicked on a file the check accepted: %v", p)
			}
		}()
		// Read-only, bbolt loads the free list only when asked to.
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true, Timeout: time.Second})
		if err == nil {
			db.Close()
		}
	})
}

// smallBoltFile is a bbolt file with one bucket, a few keys and a free
// page or two.
func smallBoltFile(f *testing.F) []byte {
	path := filepath.Join(f.TempDir(), FileName)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		f.Fatal(err)
	}
	for i := range 3 {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketMeta)
			if err != nil {
				return err
			}
			return b.Put([]byte{byte(i)}, bytes.Repeat([]byte{byte(i)}, 100))
		})
		if err != nil {
			f.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		f.Fatal(err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return file
}
