package tpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestSealedSensitiveEncodingIsTheLibrarys: the sensitive area Seal
// wraps is byte for byte go-tpm's encoding of it, for every secret length
// and secrets that hold the markers' bytes.
func TestSealedSensitiveEncodingIsTheLibrarys(t *testing.T) {
	for n := 1; n <= MaxSecret; n++ {
		for _, fill := range []byte{0, seedMarker, secretMarker} {
			secret := bytes.Repeat([]byte{fill}, n)
			if fill == 0 {
				rand.Read(secret)
			}
			_, sensitive, err := sealedObject(make([]byte, 32), secret)
			if err != nil {
				t.Fatal(err)
			}
			if sealedSensitiveLayout(n) == nil {
				t.Fatalf("%d-byte secret: go-tpm's encoding was not reused", n)
			}
			if got, want := encodeSealedSensitive(&sensitive), tpm2.Marshal(sensitive); !bytes.Equal(got, want) {
				t.Fatalf("%d-byte secret: encoded\n%x\nwant\n%x", n, got, want)
			}
		}
	}
}

// TestSealedObjectEncodingIsTheLibrarys: the public area Seal encodes
// (from the last policy's encoding, with its unique value replaced) is
// byte for byte go-tpm's, and the Name it wraps for is go-tpm's, for
// policies that change from one seal to the next and back.
func TestSealedObjectEncodingIsTheLibrarys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewImportKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	policies := []struct {
		pcrs    PCRValues
		version uint64
	}{
		{PCRValues{8: bytes.Repeat([]byte{1}, 32)}, 1},
		{PCRValues{8: bytes.Repeat([]byte{1}, 32)}, 2},
		{PCRValues{8: bytes.Repeat([]byte{1}, 32), 9: bytes.Repeat([]byte{2}, 32)}, 1},
	}
	for round := range 2 {
		for i, p := range policies {
			for range 2 {
				b, err := Seal(key, p.pcrs, p.version, []byte("share"))
				if err != nil {
					t.Fatal(err)
				}
				if sealedPrefix.prefix == nil {
					t.Fatal("go-tpm's encoding of the public area was not reused")
				}
				want := tpm2.Marshal(b.public)
				if !bytes.Equal(b.encodedPublic, want) {
					t.Fatalf("round %d, policy %d: encoded public area\n%x\nwant\n%x", round, i, b.encodedPublic, want)
				}
				name, err := tpm2.ObjectName(&b.public)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(sealedName(b.encodedPublic), name.Buffer) {
					t.Fatalf("round %d, policy %d: Name %x, want %x", round, i, sealedName(b.encodedPublic), name.Buffer)
				}
				parsed, err := ParseBlob(b.Marshal())
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := tpm2.ObjectName(&parsed.public); !bytes.Equal(got.Buffer, name.Buffer) {
					t.Fatalf("round %d, policy %d: the parsed blob names another object", round, i)
				}
			}
		}
	}
}

// TestSealedPublicEncodingOnAColdCache: the first encoding, whatever its
// policy (an empty one included, which equals the cache's empty start),
// is go-tpm's.
func TestSealedPublicEncodingOnAColdCache(t *testing.T) {
	for _, policy := range [][]byte{{}, make([]byte, 32)} {
		sealedPrefix.mu.Lock()
		sealedPrefix.policy, sealedPrefix.prefix = nil, nil
		sealedPrefix.mu.Unlock()
		public, _, err := sealedObject(policy, []byte("s"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := encodeSealedPublic(&public), tpm2.Marshal(public); !bytes.Equal(got, want) {
			t.Errorf("%d-byte policy on a cold cache: encoded %x, want %x", len(policy), got, want)
		}
	}
}
