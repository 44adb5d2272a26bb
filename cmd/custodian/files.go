package main

import (
	"errors"
	"io/fs"
	"os"

	"github.com/custodian-project/custodian/hsm/durable"
)

// writeNew writes data to a new file at path. It never replaces an existing
// file: outputs here are keys and signed documents, and silently replacing
// one (or a device node named by mistake) loses something that matters.
func writeNew(path string, data []byte, perm os.FileMode) error {
	err := durable.CreateFile(path, data, perm)
	if errors.Is(err, fs.ErrExist) {
		return withHint(err, "remove it first or choose another --out")
	}
	return err
}

// mustNotExist refuses an output path early, before any work that would be
// lost (such as a PIN prompt and a signature on a card).
func mustNotExist(path string) error {
	if _, err := os.Lstat(path); err == nil {
		return withHint(&fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}, "remove it first or choose another --out")
	}
	return nil
}
