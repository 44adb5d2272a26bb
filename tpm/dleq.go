package tpm

import (
	"bytes"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"github.com/cloudflare/circl/group"
)

// A partial decryption of a scoped key is P = s·R for a point R, computed
// by TPM2_ECDH_ZGen. Its proof is a Chaum–Pedersen proof of equal discrete
// logarithms, log_B(K) = log_R(P), made by the TPM itself with the scoped
// key's ECDAA twin (the same scalar s):
//
//   - TPM2_Commit(P1 = R, s2) draws a secret r and returns E = r·R,
//     L = r·B and K = s·B, where B is the base point whose x-coordinate is
//     SHA-256(s2) ([ProofBase]).
//   - The device hashes the statement and the commitments into a digest
//     d = SHA-256(label ‖ B ‖ K ‖ R ‖ P ‖ E ‖ L).
//   - TPM2_Sign(d, ECDAA, the commit's counter) draws nonceK and returns
//     S = r + c·s mod n with c = SHA-256(nonceK ‖ d).
//
// The verifier recomputes c and checks S·B = L + c·K and S·R = E + c·P.
// This is sound for the usual reason: the commitments are fixed before c
// (they are inside d), so two accepting answers to one commitment under
// different challenges give s' = (S−S')/(c−c') with s'·B = K and s'·R = P.
// A custodian that returns another point than s·R cannot make a proof
// that verifies, whatever it does with its TPM.
//
// The device blinds each point before the TPM sees it: it draws ρ and has
// the TPM work on R' = ρ·R, and the partial carries ρ (sealed to the
// recipient with the rest). The proof's values cross the bus in the clear
// (a signature is not a parameter the TPM can encrypt), and from E, S and
// c anyone can compute the point the proof is about, (S·R' − E)/c; blinded,
// that is s·ρ·R, worth nothing without ρ, which never reaches the TPM.
//
// K ties the proof to the share: the escrow ceremony, which knows s,
// publishes K = s·B beside the Feldman commitment s·G, and the device
// checks both at provisioning by proving a partial of R = G. So a
// verified partial is the share times R, and nothing else.

// Partial is a partial decryption and the TPM's proof of it. With a blind
// ρ, the TPM computed on R' = ρ·R and the partial s·R is ρ⁻¹·Point; without
// one, R' = R. [VerifyPartial] returns s·R.
type Partial struct {
	Point  []byte `json:"point"`           // s·R', uncompressed SEC1
	E      []byte `json:"e"`               // r·R'
	L      []byte `json:"l"`               // r·B
	NonceK []byte `json:"nonce_k"`         // the TPM's ECDAA nonce, as returned
	S      []byte `json:"s"`               // r + c·s mod n
	Blind  []byte `json:"blind,omitempty"` // ρ, a nonzero scalar
}

// ErrBadProof is wrapped by every reason a partial does not verify.
var ErrBadProof = errors.New("the partial decryption does not match its proof")

var p256 = group.P256

// proofBaseSeed is s2 of TPM2_Commit; it names B for every custodian.
const proofBaseSeed = "custodian scoped proof base v1"

type proofBase struct {
	s2, y []byte
	point group.Element
}

// ProofBase returns B as an uncompressed point. Its discrete logarithm to
// G is unknown to anyone (its x-coordinate is a hash).
func ProofBase() []byte {
	b, _ := baseOnce().point.MarshalBinary()
	return b
}

var baseOnce = sync.OnceValue(func() proofBase {
	curve := elliptic.P256().Params()
	for ctr := byte(0); ; ctr++ {
		s2 := append([]byte(proofBaseSeed), 0, ctr)
		h := sha256.Sum256(s2)
		x := new(big.Int).SetBytes(h[:])
		if x.Cmp(curve.P) >= 0 {
			continue
		}
		// y² = x³ − 3x + b
		rhs := new(big.Int).Exp(x, big.NewInt(3), curve.P)
		rhs.Sub(rhs, new(big.Int).Lsh(x, 1)).Sub(rhs, x).Add(rhs, curve.B).Mod(rhs, curve.P)
		y := new(big.Int).ModSqrt(rhs, curve.P)
		if y == nil {
			continue
		}
		if y.Bit(0) == 1 {
			y.Sub(curve.P, y)
		}
		enc := make([]byte, 65)
		enc[0] = 4
		x.FillBytes(enc[1:33])
		y.FillBytes(enc[33:])
		e := p256.NewElement()
		if err := e.UnmarshalBinary(enc); err != nil {
			panic("tpm: proof base is not on the curve")
		}
		return proofBase{s2: s2, y: enc[33:], point: e}
	}
})

// ProofKey computes K = s·B for a share s (32 bytes, big-endian): what the
// escrow ceremony publishes for each custodian of a scoped key.
func ProofKey(share []byte) ([]byte, error) {
	s := p256.NewScalar()
	if len(share) != 32 || s.UnmarshalBinary(share) != nil || s.IsZero() {
		return nil, errors.New("a share is a nonzero scalar of 32 bytes")
	}
	defer s.SetUint64(0)
	return p256.NewElement().Mul(baseOnce().point, s).MarshalBinary()
}

// proofDigest is the digest the TPM signs: the statement and commitments.
func proofDigest(k, r, p, e, l []byte) []byte {
	h := sha256.New()
	h.Write([]byte("custodian scoped partial v1\x00"))
	h.Write(ProofBase())
	for _, pt := range [][]byte{k, r, p, e, l} {
		h.Write(pt)
	}
	return h.Sum(nil)
}

// VerifyPartial checks p against R and proofKey (K as the escrow file
// publishes it) and returns the partial decryption s·R, for the scalar s
// with K = s·B. The error says which equation of the proof failed.
func VerifyPartial(proofKey, r []byte, p *Partial) ([]byte, error) {
	eq, err := checkProof(proofKey, r, p)
	if err != nil {
		return nil, err
	}
	if !eq.keyHolds {
		return nil, fmt.Errorf("%w: S·B ≠ L + c·K, so the proof was not made with the share behind the proof key", ErrBadProof)
	}
	if !eq.pointHolds {
		return nil, fmt.Errorf("%w: S·R ≠ E + c·P, so the point is not the share times R", ErrBadProof)
	}
	return p256.NewElement().Mul(eq.point, p256.NewScalar().Inv(eq.blind)).MarshalBinary()
}

// proofEquations is a decoded proof and whether each of its equations
// holds: S·B = L + c·K (the key equation) and S·R' = E + c·P (the point
// equation).
type proofEquations struct {
	blind                group.Scalar
	point                group.Element
	keyHolds, pointHolds bool
}

func checkProof(proofKey, r []byte, p *Partial) (*proofEquations, error) {
	pts, err := decodePoints(map[string][]byte{"proof key": proofKey, "R": r, "point": p.Point, "E": p.E, "L": p.L})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProof, err)
	}
	s := p256.NewScalar()
	if len(p.S) != 32 || s.UnmarshalBinary(p.S) != nil {
		return nil, fmt.Errorf("%w: S is not a scalar", ErrBadProof)
	}
	if len(p.NonceK) == 0 || len(p.NonceK) > 32 {
		return nil, fmt.Errorf("%w: nonce of %d bytes", ErrBadProof, len(p.NonceK))
	}
	blind, blinded, err := blindPoint(p.Blind, pts["R"])
	if err != nil {
		return nil, err
	}
	c := challenge(p.NonceK, proofDigest(proofKey, blinded, p.Point, p.E, p.L))
	R := p256.NewElement()
	if R.UnmarshalBinary(blinded) != nil {
		return nil, ErrBadProof
	}
	return &proofEquations{
		blind:      blind,
		point:      pts["point"],
		keyHolds:   schnorrHolds(baseOnce().point, pts["proof key"], pts["L"], s, c),
		pointHolds: schnorrHolds(R, pts["point"], pts["E"], s, c),
	}, nil
}

// blindPoint decodes ρ (nil means 1) and returns it with ρ·R encoded.
func blindPoint(rho []byte, r group.Element) (group.Scalar, []byte, error) {
	blind := p256.NewScalar().SetUint64(1)
	if rho != nil && (len(rho) != 32 || blind.UnmarshalBinary(rho) != nil || blind.IsZero()) {
		return nil, nil, fmt.Errorf("%w: the blind is not a nonzero scalar", ErrBadProof)
	}
	enc, err := p256.NewElement().Mul(r, blind).MarshalBinary()
	return blind, enc, err
}

// newBlind draws ρ and returns it with ρ·R.
func newBlind(r []byte) (rho, blinded []byte, err error) {
	R := p256.NewElement()
	if err := R.UnmarshalBinary(r); err != nil {
		return nil, nil, err
	}
	k := p256.RandomNonZeroScalar(rand.Reader)
	defer k.SetUint64(0)
	if rho, err = k.MarshalBinary(); err != nil {
		return nil, nil, err
	}
	blinded, err = p256.NewElement().Mul(R, k).MarshalBinary()
	return rho, blinded, err
}

// schnorrHolds checks S·base = commit + c·pub.
func schnorrHolds(base, pub, commit group.Element, s, c group.Scalar) bool {
	lhs := p256.NewElement().Mul(base, s)
	rhs := p256.NewElement().Mul(pub, c)
	rhs.Add(rhs, commit)
	return lhs.IsEqual(rhs)
}

// challenge is the TPM's ECDAA challenge SHA-256(nonceK ‖ d), mod n.
func challenge(nonceK, digest []byte) group.Scalar {
	h := sha256.New()
	h.Write(nonceK)
	h.Write(digest)
	return p256.NewScalar().SetBigInt(new(big.Int).SetBytes(h.Sum(nil)))
}

// decodePoints decodes uncompressed points, refusing the identity.
func decodePoints(in map[string][]byte) (map[string]group.Element, error) {
	out := make(map[string]group.Element, len(in))
	for name, b := range in {
		e := p256.NewElement()
		if len(b) != 65 || e.UnmarshalBinary(b) != nil || e.IsIdentity() {
			return nil, fmt.Errorf("%s is not an uncompressed P-256 point", name)
		}
		out[name] = e
	}
	return out, nil
}

// uncompressed encodes a TPM point as SEC1.
func uncompressed(x, y []byte) ([]byte, error) {
	if len(x) > 32 || len(y) > 32 {
		return nil, errors.New("coordinate longer than 32 bytes")
	}
	out := make([]byte, 65)
	out[0] = 4
	copy(out[33-len(x):33], x)
	copy(out[65-len(y):], y)
	if _, err := decodePoints(map[string][]byte{"point": out}); err != nil {
		return nil, err
	}
	return bytes.Clone(out), nil
}
