// Package ledgertest reads what a ledger export wrote, for tests.
package ledgertest

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// ExportLock is the lock file an export keeps in its directory (the
// ledger package's exportLock): not part of the log.
const ExportLock = ".export.lock"

// ReadTree reads every file under dir but ExportLock, keyed by its
// slash-separated path relative to dir: an exported log as its URLs name
// it.
func ReadTree(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if e.Name() == ExportLock {
			return nil // the export's lock, not part of the log
		}
		data, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
