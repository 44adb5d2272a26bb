// Package escrowtest makes the envelopes a requester could make out of
// another envelope's encapsulated key without knowing its ephemeral
// scalar, so that tests can check each is refused wherever envelopes are
// read. It decodes and encodes the envelope format on its own, from its
// description in docs/escrow.md.
package escrowtest

import (
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/cloudflare/circl/group"
	"golang.org/x/crypto/cryptobyte"

	"github.com/custodian-project/custodian/hsm/warrant"
)

// Forgery is one requester-made envelope: the file, and the reference a
// warrant would name it by.
type Forgery struct {
	Name     string
	Envelope []byte
	Ref      warrant.EnvelopeRef
}

// fields of a version 2 or 3 envelope.
type fields struct {
	magic            string
	keyID, target    string
	enc, proof, text []byte
}

// The versions with a seal proof: c ‖ z, and A (compressed) ‖ z.
const (
	magicV2 = "CUSTENV2"
	magicV3 = "CUSTENV3"
)

var g = group.P256

func decode(t testing.TB, data []byte) fields {
	t.Helper()
	s := cryptobyte.String(data)
	var m []byte
	var keyID, target, enc, proof cryptobyte.String
	if !s.ReadBytes(&m, len(magicV2)) || (string(m) != magicV2 && string(m) != magicV3) || !s.ReadUint16LengthPrefixed(&keyID) ||
		!s.ReadUint16LengthPrefixed(&target) || !s.ReadUint16LengthPrefixed(&enc) || !s.ReadUint16LengthPrefixed(&proof) {
		t.Fatal("escrowtest: not a version 2 or 3 envelope")
	}
	return fields{string(m), string(keyID), string(target), enc, proof, s}
}

func (f fields) forgery(name string) Forgery {
	var b cryptobyte.Builder
	b.AddBytes([]byte(f.magic))
	for _, v := range [][]byte{[]byte(f.keyID), []byte(f.target), f.enc, f.proof} {
		b.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes(v) })
	}
	b.AddBytes(f.text)
	digest := sha256.Sum256(f.text)
	return Forgery{Name: name, Envelope: b.BytesOrPanic(),
		Ref: warrant.EnvelopeRef{KeyID: f.keyID, Target: f.target, Enc: f.enc, CiphertextSHA256: digest[:], Proof: f.proof}}
}

// Target is the target a forgery relabels the victim's key to.
const Target = "someone-else@example.org"

// Forgeries returns what a requester can make from victim, an honest
// envelope it wants opened under another name, and other, an honest
// envelope it may hold (its own): the victim's R scaled (α·R) or shifted
// (R + β·G), with the victim's proof adjusted the way that keeps
// z·G − c·R' equal to the victim's commitment; R under another target
// (Target) and under another key ID (other's, or 2099-01 when other has
// the victim's); R with other's proof and ciphertext; and the
// victim's header over other's ciphertext. A warrant naming α·R or
// R + β·G would let the requester undo α or β on the partials.
//
// For version 3 envelopes (proof A ‖ z) the proof is adjusted likewise
// ((α·A, α·z) and (A, z + c·β), c being the victim's challenge), and one
// more forgery swaps the victim's A for other's.
func Forgeries(t testing.TB, victim, other []byte) []Forgery {
	t.Helper()
	v, o := decode(t, victim), decode(t, other)
	if v.magic != o.magic {
		t.Fatal("escrowtest: victim and other are of different versions")
	}
	R := g.NewElement()
	if R.UnmarshalBinary(v.enc) != nil {
		t.Fatal("escrowtest: the victim's key does not decode")
	}
	alpha, beta := g.RandomNonZeroScalar(rand.Reader), g.RandomNonZeroScalar(rand.Reader)
	scaled, shifted := v, v
	scaled.enc = encode(t, g.NewElement().Mul(R, alpha))
	shifted.enc = encode(t, g.NewElement().Add(R, g.NewElement().MulGen(beta)))
	var swapped *fields
	if v.magic == magicV2 {
		c, z := g.NewScalar(), g.NewScalar()
		if c.UnmarshalBinary(v.proof[:32]) != nil || z.UnmarshalBinary(v.proof[32:]) != nil {
			t.Fatal("escrowtest: the victim's proof does not decode")
		}
		scaled.proof = proof(t, c, g.NewScalar().Mul(z, alpha))
		shifted.proof = proof(t, c, g.NewScalar().Add(z, g.NewScalar().Mul(c, beta)))
	} else {
		A, z := g.NewElement(), g.NewScalar()
		if A.UnmarshalBinary(v.proof[:33]) != nil || z.UnmarshalBinary(v.proof[33:]) != nil {
			t.Fatal("escrowtest: the victim's proof does not decode")
		}
		// The victim's challenge, as the victim's sealer hashed it: the
		// victim's proof must hold with it, or this package's transcript
		// is not the one docs/escrow.md describes.
		c := challengeV3(v, v.proof[:33])
		rhs := g.NewElement().Add(A, g.NewElement().Mul(R, c))
		if !g.NewElement().MulGen(z).IsEqual(rhs) {
			t.Fatal("escrowtest: the victim's version 3 proof does not hold under the documented transcript")
		}
		scaled.proof = proofV3(t, g.NewElement().Mul(A, alpha), g.NewScalar().Mul(z, alpha))
		shifted.proof = proofV3(t, A, g.NewScalar().Add(z, g.NewScalar().Mul(c, beta)))
		s := v
		s.proof = append(append([]byte{}, o.proof[:33]...), v.proof[33:]...)
		swapped = &s
	}

	retargeted, rekeyed := v, v
	retargeted.target = Target
	rekeyed.keyID = o.keyID
	if rekeyed.keyID == v.keyID {
		rekeyed.keyID = "2099-01"
	}

	copied := o
	copied.enc = v.enc

	otherText := v
	otherText.text = o.text

	out := []Forgery{
		scaled.forgery("α·R"), shifted.forgery("R + β·G"),
		retargeted.forgery("R relabelled to another target"), rekeyed.forgery("R relabelled to another key ID"),
		copied.forgery("R with the proof copied from another envelope"),
		otherText.forgery("the header over another ciphertext"),
	}
	if swapped != nil {
		out = append(out, swapped.forgery("A swapped for another envelope's"))
	}
	return out
}

// challengeV3 is c of a version 3 proof with commitment a (compressed)
// for the envelope f, as docs/escrow.md defines it.
func challengeV3(f fields, a []byte) group.Scalar {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes([]byte(f.keyID)) })
	b.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes([]byte(f.target)) })
	digest := sha256.Sum256(f.text)
	b.AddBytes(digest[:])
	gen, _ := g.Generator().MarshalBinary()
	b.AddBytes(gen)
	b.AddBytes(f.enc)
	b.AddBytes(a)
	return g.HashToScalar(b.BytesOrPanic(), []byte("custodian envelope seal proof v3"))
}

func proofV3(t testing.TB, a group.Element, z group.Scalar) []byte {
	ab, err1 := a.MarshalBinaryCompress()
	zb, err2 := z.MarshalBinary()
	if err1 != nil || err2 != nil {
		t.Fatal("escrowtest: a proof does not encode")
	}
	return append(ab, zb...)
}

func encode(t testing.TB, e group.Element) []byte {
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func proof(t testing.TB, c, z group.Scalar) []byte {
	cb, err1 := c.MarshalBinary()
	zb, err2 := z.MarshalBinary()
	if err1 != nil || err2 != nil {
		t.Fatal("escrowtest: a scalar does not encode")
	}
	return append(cb, zb...)
}
