package escrow

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/cryptobyte"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/internal/p256"
)

// An envelope's seal proof shows that its sealer knows the scalar r behind
// its encapsulated key R = r·G, for this key ID, target and ciphertext. It
// is a Schnorr proof of knowledge made non-interactive by Fiat–Shamir, as
// in signed ElGamal (Tsiounis–Yung; Schnorr–Jakobsson):
//
//	k random, A = k·G
//	c = hash_to_field(transcript(key ID, target, SHA-256(ciphertext), G, R, A)) (RFC 9380, DST sealProofDST)
//	z = k + c·r mod n
//
// This is version 2's form (sealproof3.go has version 3's, A ‖ z, which
// Seal makes). The proof is c ‖ z (32 bytes each, big-endian, both < n). The verifier
// computes A = z·G − c·R, refuses the identity, and checks that the
// transcript hashes to c. The transcript encoding is fixed:
//
//	uint16 len ‖ key ID ‖ uint16 len ‖ target ‖ digest (32) ‖ G (65) ‖ R (65) ‖ A (65)
//
// with points uncompressed (SEC1).
//
// Why a custodian needs it: a partial decryption is s_i·R for whatever R a
// warrant names. Without the proof, whoever hands the court an envelope
// could name α·R_B, or R_B + β·G, for another envelope's R_B, and undo α or
// β afterwards. With it, an R the requester did not draw comes with a proof
// it cannot make: Schnorr's proof is special-sound (two answers z, z' to
// one A under challenges c ≠ c' give r = (z − z')/(c − c')), and in the
// random-oracle model the forking lemma turns any prover that succeeds
// with non-negligible probability into one that outputs r. So every named
// R is one whose r its namer knows (or an honest sealer's, named as that
// sealer labelled it), and s·R = r·(s·G) is something that party could
// compute without the custodians: the partials teach it nothing about any
// other envelope. Rewinding a requester that interleaves many envelopes
// is not known to stay efficient, which is why signed ElGamal's IND-CCA2
// proofs add the generic-group model (Schnorr–Jakobsson, 2000) or the
// algebraic-group model under the discrete-logarithm assumption
// (Fuchsbauer–Plouviez–Seurin, 2020) to the random oracle. Shoup–Gennaro's
// TDH2 avoids this (CCA under DDH in the random-oracle model alone) at the
// price of a second point r·Ḡ in each envelope and an equality-of-
// logarithms proof; the single Schnorr proof keeps the envelope's enc an
// unchanged RFC 9180 encapsulation.
//
// Every part of the statement is in the hash, so nothing carries over:
// the same R under another target or key ID, α·R, R + β·G (for which
// z·G − c·(R + β·G) is the same A, but R is hashed), a proof copied from
// another envelope, or the same header over another ciphertext all hash
// to another c.
const sealProofDST = "custodian envelope seal proof v1"

// sealProofLen is c ‖ z.
const sealProofLen = 64

// ErrUnproven is matched (beside ErrEnvelope) by every refusal of an
// envelope for its seal proof: missing (a version 1 envelope), malformed,
// or not matching the envelope.
var ErrUnproven = errors.New("the envelope does not prove it was sealed honestly")

// unprovenError is a refusal for the seal proof, with its detail.
type unprovenError struct{ detail string }

func (e *unprovenError) Error() string { return ErrUnproven.Error() + ": " + e.detail }

func (e *unprovenError) Is(target error) bool { return target == ErrUnproven || target == ErrEnvelope }

// sealStatement is what a seal proof is about.
type sealStatement struct {
	keyID, target string
	digest        []byte // SHA-256 of the ciphertext
	enc           []byte // R, uncompressed
}

// challenge is c for the commitment a (uncompressed), in a version 2
// proof.
func (st *sealStatement) challenge(a []byte) []byte {
	return st.challengeWith(a, sealProofDST)
}

// challengeWith hashes the transcript with commitment a under dst.
func (st *sealStatement) challengeWith(a []byte, dst string) []byte {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes([]byte(st.keyID)) })
	b.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes([]byte(st.target)) })
	b.AddBytes(st.digest)
	b.AddBytes(generator())
	b.AddBytes(st.enc)
	b.AddBytes(a)
	c, _ := g.HashToScalar(b.BytesOrPanic(), []byte(dst)).MarshalBinary()
	return c
}

// generator is G, uncompressed.
var generator = sync.OnceValue(func() []byte {
	b, _ := g.Generator().MarshalBinary()
	return b
})

// proveSeal proves knowledge of r (32 bytes) for st.enc = r·G. k·G runs
// in crypto/ecdh and z in internal/p256 (bigmod), both constant time: k
// and r are secret.
func proveSeal(st *sealStatement, r []byte) ([]byte, error) {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	c := st.challenge(k.PublicKey().Bytes())
	kn, err := p256.ParseScalar(k.Bytes())
	if err != nil {
		return nil, err
	}
	defer kn.Erase()
	rn, err := p256.ParseScalar(r)
	if err != nil {
		return nil, errors.New("the ephemeral key is not a scalar")
	}
	defer rn.Erase()
	cn, err := p256.ParseScalar(c)
	if err != nil {
		return nil, err
	}
	z := kn.Add(rn.Mul(cn)).Bytes()
	return append(c, z...), nil
}

// verifySeal checks a seal proof against its statement: a version 2
// proof (c ‖ z, 64 bytes) or a version 3 one (A ‖ z, 65 bytes,
// sealproof3.go); their lengths tell them apart. Scalars must be
// canonical (below n) and R an uncompressed point other than the identity.
func verifySeal(st *sealStatement, proof []byte) error {
	if len(proof) == 0 {
		return errors.New("it carries no seal proof")
	}
	if err := st.check(); err != nil {
		return err
	}
	switch len(proof) {
	case sealProofLen:
		return verifySealV2(st, proof)
	case sealProofV3Len:
		return verifySealV3(st, proof)
	}
	return fmt.Errorf("its seal proof is %d bytes, not %d (version 2) or %d (version 3)", len(proof), sealProofLen, sealProofV3Len)
}

// check refuses a statement no envelope can make.
func (st *sealStatement) check() error {
	if len(st.digest) != 32 {
		return errors.New("its ciphertext digest is not 32 bytes")
	}
	// What no envelope can hold has no proof (and would not fit the
	// transcript's length prefixes).
	if err := ids.CheckKeyID(st.keyID); err != nil {
		return err
	}
	return checkTarget(st.target)
}

// verifySealV2 is the rest of verifySeal for a version 2 proof.
func verifySealV2(st *sealStatement, proof []byte) error {
	c, z := proof[:32], proof[32:]
	if _, err := p256.ParseScalar(c); err != nil {
		return errors.New("its seal proof holds a number that is not a canonical scalar")
	}
	if _, err := p256.ParseScalar(z); err != nil {
		return errors.New("its seal proof holds a number that is not a canonical scalar")
	}
	R, err := parsePoint(st.enc)
	if err != nil {
		return fmt.Errorf("its encapsulated key is %v", err)
	}
	// A = z·G − c·R (public values: the proof and R)
	a, err := p256.MulGen(z)
	if err != nil {
		return err
	}
	cR, err := p256.Mul(R, c)
	if err != nil {
		return err
	}
	a.Add(a, cR.Negate(cR))
	enc, err := p256.Encode(a)
	if err != nil {
		return errors.New("its seal proof does not match it")
	}
	if !equalPoint(st.challenge(enc), c) {
		return errors.New("its seal proof does not match it: it was not made by whoever drew its encapsulated key, for this key ID, target and ciphertext")
	}
	return nil
}

// CheckSealProof checks an envelope's seal proof given its key ID,
// target, encapsulated key, the SHA-256 of its ciphertext and the proof,
// as a warrant names them: what the appliance checks before it works on
// an envelope. Its errors wrap ErrEnvelope and ErrUnproven.
func CheckSealProof(keyID, target string, enc, ciphertextSHA256, proof []byte) error {
	st := &sealStatement{keyID: keyID, target: target, digest: ciphertextSHA256, enc: enc}
	if err := verifySeal(st, proof); err != nil {
		return &unprovenError{detail: err.Error()}
	}
	return nil
}
