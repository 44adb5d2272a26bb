package tpm

import (
	"bytes"
	"crypto/sha256"

	"github.com/custodian-project/custodian/internal/bytecache"
)

// parsed holds what this process decoded and checked of one encoding (a
// blob, a scoped key), by the SHA-256 of the bytes; never more than
// maxParsed. Only checks that are a function of the bytes alone go
// through it: a device decodes the same bundle at every release, and
// decoding its import key and public area (go-tpm marshals by
// reflection) costs more than the TPM command that reads a PCR. The
// values are shared: callers hand out clones.
type parsed[T any] struct{ kept *bytecache.Cache[T] }

// maxParsed bounds a parsed cache: a device holds a few blobs and keys.
const maxParsed = 64

func newParsed[T any]() *parsed[T] { return &parsed[T]{kept: bytecache.New[T](maxParsed)} }

// parse returns what decode made of data, decoding it only the first
// time. What decode makes may refer into the bytes it is given: it is
// given a copy that no caller holds. An error is not kept.
func (c *parsed[T]) parse(data []byte, decode func([]byte) (T, error)) (T, error) {
	sum := sha256.Sum256(data)
	if v, ok := c.kept.Get(string(sum[:])); ok {
		return v, nil
	}
	v, err := decode(bytes.Clone(data))
	if err != nil {
		return v, err
	}
	c.kept.Add(string(sum[:]), v)
	return v, nil
}
