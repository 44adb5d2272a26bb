package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	mathrand "math/rand/v2"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// fixedSeed is a parent key whose encapsulation gives back, every time,
// one seed and ciphertext the real key made, and records the labels it
// was asked for: go-tpm's wrapper and createDuplicate are then made from
// the same seed. sym, if set, replaces the parent's symmetric parameters.
type fixedSeed struct {
	tpm2.LabeledEncapsulationKey
	seed, ciphertext []byte
	sym              *tpm2.TPMTSymDefObject
	labels           []string
}

func newFixedSeed(t *testing.T, parent tpm2.LabeledEncapsulationKey) *fixedSeed {
	seed, ciphertext, err := parent.Encapsulate(rand.Reader, "DUPLICATE")
	if err != nil {
		t.Fatal(err)
	}
	return &fixedSeed{LabeledEncapsulationKey: parent, seed: seed, ciphertext: ciphertext}
}

func (k *fixedSeed) Encapsulate(_ io.Reader, label string) ([]byte, []byte, error) {
	k.labels = append(k.labels, label)
	return bytes.Clone(k.seed), bytes.Clone(k.ciphertext), nil
}

func (k *fixedSeed) SymmetricParameters() *tpm2.TPMTSymDefObject {
	if k.sym != nil {
		return k.sym
	}
	return k.LabeledEncapsulationKey.SymmetricParameters()
}

// importEncapsulationKeys are the RSA-2048 and P-256 import keys as
// go-tpm's encapsulation keys.
func importEncapsulationKeys(t *testing.T) map[string]tpm2.LabeledEncapsulationKey {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	eccKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]tpm2.LabeledEncapsulationKey{}
	for name, pub := range map[string]crypto.PublicKey{"rsa": &rsaKey.PublicKey, "ecc": &eccKey.PublicKey} {
		k, err := NewImportKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		if keys[name], err = tpm2.ImportEncapsulationKey(&k.public); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// TestDuplicateIsTheLibrarys: for RSA and P-256 import keys, sealed
// areas of every secret length, an empty area and a scoped key's area,
// createDuplicate's wrapper and encrypted seed are byte for byte
// go-tpm's from the same seed, and both ask the parent for the
// "DUPLICATE" label once.
func TestDuplicateIsTheLibrarys(t *testing.T) {
	areas := [][]byte{{}}
	for n := 1; n <= MaxSecret; n++ {
		secret := make([]byte, n)
		rand.Read(secret)
		_, sensitive, err := sealedObject(make([]byte, 32), secret)
		if err != nil {
			t.Fatal(err)
		}
		areas = append(areas, tpm2.Marshal(sensitive))
	}
	scalar := make([]byte, 32)
	rand.Read(scalar)
	areas = append(areas, tpm2.Marshal(tpm2.TPMTSensitive{
		SensitiveType: tpm2.TPMAlgECC,
		SeedValue:     tpm2.TPM2BDigest{Buffer: make([]byte, 32)},
		Sensitive:     tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: scalar}),
	}))
	for kind, parent := range importEncapsulationKeys(t) {
		for i, area := range areas {
			name := make([]byte, 34)
			rand.Read(name)
			ours := newFixedSeed(t, parent)
			theirs := *ours
			gotDup, gotSeed, err := createDuplicate(rand.Reader, ours, name, area)
			if err != nil {
				t.Fatalf("%s, area %d: %v", kind, i, err)
			}
			wantDup, wantSeed, err := tpm2.CreateDuplicate(rand.Reader, &theirs, name, area)
			if err != nil {
				t.Fatalf("%s, area %d: go-tpm: %v", kind, i, err)
			}
			if !bytes.Equal(gotDup, wantDup) || !bytes.Equal(gotSeed, wantSeed) {
				t.Fatalf("%s, area %d: wrapper\n%x\nseed %x\nwant\n%x\nseed %x", kind, i, gotDup, gotSeed, wantDup, wantSeed)
			}
			if fmt.Sprint(ours.labels) != "[DUPLICATE]" || fmt.Sprint(theirs.labels) != "[DUPLICATE]" {
				t.Fatalf("%s: labels %q, go-tpm's %q", kind, ours.labels, theirs.labels)
			}
		}
	}
}

// TestDuplicateReadsRandomAsTheLibraryDoes: with the RSA import key the
// encapsulation is deterministic in its random source, so createDuplicate
// and go-tpm, each given the same seeded source, make the same wrapper and
// encrypted seed through the real RSA-OAEP encapsulation.
func TestDuplicateReadsRandomAsTheLibraryDoes(t *testing.T) {
	parent := importEncapsulationKeys(t)["rsa"]
	_, sensitive, err := sealedObject(make([]byte, 32), []byte("share"))
	if err != nil {
		t.Fatal(err)
	}
	area, name := tpm2.Marshal(sensitive), sealedName([]byte("public area"))
	for seed := range uint64(4) {
		source := func() io.Reader { return mathrand.NewChaCha8([32]byte{byte(seed)}) }
		gotDup, gotSeed, err := createDuplicate(source(), parent, name, area)
		if err != nil {
			t.Fatal(err)
		}
		wantDup, wantSeed, err := tpm2.CreateDuplicate(source(), parent, name, area)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gotDup, wantDup) || !bytes.Equal(gotSeed, wantSeed) {
			t.Fatalf("source %d: wrapper %x seed %x, want %x seed %x", seed, gotDup, gotSeed, wantDup, wantSeed)
		}
	}
}

// TestDuplicateRefusesWhatTheLibraryRefuses: a parent whose symmetric
// algorithm is not AES, or whose AES mode is not CFB, gets go-tpm's
// error, and nothing is encapsulated to it.
func TestDuplicateRefusesWhatTheLibraryRefuses(t *testing.T) {
	parent := importEncapsulationKeys(t)["rsa"]
	for _, c := range []struct {
		sym  tpm2.TPMTSymDefObject
		want error
	}{
		{tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}, tpm2.ErrUnsupportedCipher},
		{tpm2.TPMTSymDefObject{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgOFB),
		}, tpm2.ErrUnsupportedMode},
	} {
		ours := newFixedSeed(t, parent)
		ours.sym = &c.sym
		theirs := *ours
		_, _, err := createDuplicate(rand.Reader, ours, []byte("name"), []byte("area"))
		_, _, libErr := tpm2.CreateDuplicate(rand.Reader, &theirs, []byte("name"), []byte("area"))
		if !errors.Is(err, c.want) || !errors.Is(libErr, c.want) {
			t.Errorf("%v: got %v, go-tpm %v; want %v from both", c.sym.Algorithm, err, libErr, c.want)
		}
		if len(ours.labels) != 0 {
			t.Errorf("%v: encapsulated to a parent it refuses", c.sym.Algorithm)
		}
	}
}

// TestDuplicateRefusesWrappersNoTPM2BCanHold: the wrapper goes to the TPM
// in a TPM2B_PRIVATE, whose size has two bytes; an area that fits its own
// size field but not the wrapper's is refused before anything is
// encapsulated, and the largest area that fits is wrapped.
func TestDuplicateRefusesWrappersNoTPM2BCanHold(t *testing.T) {
	parent := importEncapsulationKeys(t)["rsa"]
	largest := math.MaxUint16 - 4 - sha256.Size
	dup, _, err := createDuplicate(rand.Reader, parent, make([]byte, 34), make([]byte, largest))
	if err != nil || len(dup) != math.MaxUint16 {
		t.Fatalf("a %d-byte area: %d-byte wrapper, %v; want %d bytes", largest, len(dup), err, math.MaxUint16)
	}
	ours := newFixedSeed(t, parent)
	if _, _, err := createDuplicate(rand.Reader, ours, make([]byte, 34), make([]byte, largest+1)); err == nil || len(ours.labels) != 0 {
		t.Errorf("a %d-byte area: err %v, %d encapsulations; want a refusal before any", largest+1, err, len(ours.labels))
	}
}
