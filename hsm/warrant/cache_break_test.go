package warrant

import (
	"bytes"
	"testing"
)

// TestInvariantCertificateCacheOwnsItsBytes: a caller may reuse the buffer
// it passed to Verify once Verify has returned (nothing documents that the
// warrant's bytes are kept). The kept certificates must not share that
// memory: otherwise the next warrant of the same judge meets a cached
// certificate whose Raw, RawTBSCertificate and Signature are whatever the
// caller wrote since, and the whole submitted warrant stays pinned in
// memory for as long as one of its certificates is cached.
func TestInvariantCertificateCacheOwnsItsBytes(t *testing.T) {
	f := newFixture(t)
	first := f.sign(t, f.content(t, f.warrant()), f.signer())
	buf := bytes.Clone(first)
	if _, err := f.verifier().Verify(buf); err != nil {
		t.Fatal(err)
	}
	// The caller reads its next input into the same buffer.
	for i := range buf {
		buf[i] = 0
	}
	if c, ok := parsedCerts.Get(string(f.judge.Raw)); ok && !bytes.Equal(c.Raw, f.judge.Raw) {
		t.Errorf("the cached judge certificate changed with the caller's buffer (it aliases the submitted warrant, %d bytes kept for a %d-byte certificate)", cap(c.Raw), len(c.Raw))
	}
	w := f.warrant()
	w.Serial = "W-2026-0043"
	second := f.sign(t, f.content(t, w), f.signer())
	if _, err := f.verifier().Verify(second); err != nil {
		t.Fatalf("a later warrant of the same judge is refused after the first caller reused its buffer: %v", err)
	}
}
