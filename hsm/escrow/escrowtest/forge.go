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

// fields of a version 2 envelope.
type fields struct {
	keyID, target    string
	enc, proof, text []byte
}

const magic = "CUSTENV2"

var g = group.P256

func decode(t testing.TB, data []byte) fields {
	t.Helper()
	s := cryptobyte.String(data)
	var m []byte
	var keyID, target, enc, proof cryptobyte.String
	if !s.ReadBytes(&m, len(magic)) || string(m) != magic || !s.ReadUint16LengthPrefixed(&keyID) ||
		!s.ReadUint16LengthPrefixed(&target) || !s.ReadUint16LengthPrefixed(&enc) || !s.ReadUint16LengthPrefixed(&proof) {
		t.Fatal("escrowtest: not a version 2 envelope")
	}
	return fields{string(keyID), string(target), enc, proof, s}
}

func (f fields) forgery(name string) Forgery {
	var b cryptobyte.Builder
	b.AddBytes([]byte(magic))
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
func Forgeries(t testing.TB, victim, other []byte) []Forgery {
	t.Helper()
	v, o := decode(t, victim), decode(t, other)
	R, c, z := g.NewElement(), g.NewScalar(), g.NewScalar()
	if R.UnmarshalBinary(v.enc) != nil || c.UnmarshalBinary(v.proof[:32]) != nil || z.UnmarshalBinary(v.proof[32:]) != nil {
		t.Fatal("escrowtest: the victim's key or proof does not decode")
	}
	alpha, beta := g.RandomNonZeroScalar(rand.Reader), g.RandomNonZeroScalar(rand.Reader)

	scaled := v
	scaled.enc = encode(t, g.NewElement().Mul(R, alpha))
	scaled.proof = proof(t, c, g.NewScalar().Mul(z, alpha))

	shifted := v
	shifted.enc = encode(t, g.NewElement().Add(R, g.NewElement().MulGen(beta)))
	shifted.proof = proof(t, c, g.NewScalar().Add(z, g.NewScalar().Mul(c, beta)))

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

	return []Forgery{
		scaled.forgery("α·R"), shifted.forgery("R + β·G"),
		retargeted.forgery("R relabelled to another target"), rekeyed.forgery("R relabelled to another key ID"),
		copied.forgery("R with the proof copied from another envelope"),
		otherText.forgery("the header over another ciphertext"),
	}
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
