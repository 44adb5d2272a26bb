package p256

import (
	"bytes"
	"crypto/ecdh"
	"testing"
)

// FuzzParsePoint checks ParsePoint against crypto/ecdh, which accepts
// exactly the uncompressed points on the curve, and that what it accepts
// encodes back to the same bytes.
func FuzzParsePoint(f *testing.F) {
	f.Add(randomPointBytes)
	f.Add([]byte{0})
	f.Add(append([]byte{4}, make([]byte, 64)...))
	f.Add(Generator().BytesCompressed())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePoint(b)
		_, want := ecdh.P256().NewPublicKey(b)
		if (err == nil) != (want == nil) {
			t.Fatalf("ParsePoint says %v, crypto/ecdh %v", err, want)
		}
		if err != nil {
			return
		}
		enc, err := Encode(p)
		if err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("the point encodes as %x, not %x (%v)", enc, b, err)
		}
	})
}
