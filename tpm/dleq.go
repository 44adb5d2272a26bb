package tpm

import (
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"github.com/custodian-project/custodian/internal/p256"
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
//
// The arithmetic is internal/p256's (filippo.io/nistec and bigmod): the
// blinds, the share and the partials are handled in constant time (the
// batch weights, hashes of the partials, steer the sums' additions).

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

// proofBaseSeed is s2 of TPM2_Commit; it names B for every custodian.
const proofBaseSeed = "custodian scoped proof base v1"

type proofBase struct {
	s2, y   []byte
	encoded []byte
	point   *p256.Point // read only: never a receiver
}

// ProofBase returns B as an uncompressed point. Its discrete logarithm to
// G is unknown to anyone (its x-coordinate is a hash).
func ProofBase() []byte {
	return baseOnce().encoded
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
		// y² = x³ − 3x + b (public values: math/big is fine here)
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
		e, err := p256.ParsePoint(enc)
		if err != nil {
			panic("tpm: proof base is not on the curve")
		}
		return proofBase{s2: s2, y: enc[33:], encoded: enc, point: e}
	}
})

// ProofKey computes K = s·B for a share s (32 bytes, big-endian): what the
// escrow ceremony publishes for each custodian of a scoped key.
func ProofKey(share []byte) ([]byte, error) {
	s, err := p256.ParseScalar(share)
	if err != nil || s.IsZero() {
		return nil, errors.New("a share is a nonzero scalar of 32 bytes")
	}
	defer s.Erase()
	k, err := p256.Mul(baseOnce().point, share)
	if err != nil {
		return nil, err
	}
	return p256.Encode(k)
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
	point, err := p256.Mul(eq.point, eq.blind.Inverse().Bytes())
	if err != nil {
		return nil, err
	}
	return p256.Encode(point)
}

// proofEquations is a decoded proof and whether each of its equations
// holds: S·B = L + c·K (the key equation) and S·R' = E + c·P (the point
// equation).
type proofEquations struct {
	blind                *p256.Scalar
	point                *p256.Point
	keyHolds, pointHolds bool
}

func checkProof(proofKey, r []byte, p *Partial) (*proofEquations, error) {
	names := []string{"proof key", "R", "point", "E", "L"}
	pts, err := decodePoints(names, [][]byte{proofKey, r, p.Point, p.E, p.L})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadProof, err)
	}
	K, R, P, E, L := pts[0], pts[1], pts[2], pts[3], pts[4]
	if _, err := p256.ParseScalar(p.S); err != nil {
		return nil, fmt.Errorf("%w: S is not a scalar", ErrBadProof)
	}
	if len(p.NonceK) == 0 || len(p.NonceK) > 32 {
		return nil, fmt.Errorf("%w: nonce of %d bytes", ErrBadProof, len(p.NonceK))
	}
	blind, blindedR, err := blindPoint(p.Blind, R)
	if err != nil {
		return nil, err
	}
	blinded, err := p256.Encode(blindedR)
	if err != nil {
		return nil, ErrBadProof
	}
	c := challenge(p.NonceK, proofDigest(proofKey, blinded, p.Point, p.E, p.L)).Bytes()
	return &proofEquations{
		blind:      blind,
		point:      P,
		keyHolds:   schnorrHolds(baseOnce().point, K, L, p.S, c),
		pointHolds: schnorrHolds(blindedR, P, E, p.S, c),
	}, nil
}

// blindPoint decodes ρ (nil means 1) and returns it with ρ·R.
func blindPoint(rho []byte, r *p256.Point) (*p256.Scalar, *p256.Point, error) {
	if rho == nil {
		return p256.ReduceScalar([]byte{1}), r, nil
	}
	blind, err := p256.ParseScalar(rho)
	if err != nil || blind.IsZero() {
		return nil, nil, fmt.Errorf("%w: the blind is not a nonzero scalar", ErrBadProof)
	}
	blinded, err := p256.Mul(r, rho)
	return blind, blinded, err
}

// newBlind draws ρ and returns it with ρ·R encoded. The caller erases ρ.
func newBlind(r []byte) (rho *p256.Scalar, blinded []byte, err error) {
	R, err := p256.ParsePoint(r)
	if err != nil {
		return nil, nil, err
	}
	if rho, err = p256.RandomScalar(); err != nil {
		return nil, nil, err
	}
	b, err := p256.Mul(R, rho.Bytes())
	if err == nil {
		blinded, err = p256.Encode(b)
	}
	if err != nil {
		rho.Erase()
		return nil, nil, err
	}
	return rho, blinded, nil
}

// schnorrHolds checks S·base = commit + c·pub.
func schnorrHolds(base, pub, commit *p256.Point, s, c []byte) bool {
	lhs, err := p256.Mul(base, s)
	if err != nil {
		return false
	}
	rhs, err := p256.Mul(pub, c)
	if err != nil {
		return false
	}
	rhs.Add(rhs, commit)
	return lhs.Equal(rhs) == 1
}

// challenge is the TPM's ECDAA challenge SHA-256(nonceK ‖ d), mod n.
func challenge(nonceK, digest []byte) *p256.Scalar {
	h := sha256.New()
	h.Write(nonceK)
	h.Write(digest)
	return p256.ReduceScalar(h.Sum(nil))
}

// decodePoints decodes uncompressed points, refusing the identity; an
// error names the first that is not one.
func decodePoints(names []string, encoded [][]byte) ([]*p256.Point, error) {
	out := make([]*p256.Point, len(encoded))
	for i, b := range encoded {
		p, err := p256.ParsePoint(b)
		if err != nil {
			return nil, fmt.Errorf("%s is not an uncompressed P-256 point", names[i])
		}
		out[i] = p
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
	if _, err := p256.ParsePoint(out); err != nil {
		return nil, errors.New("point is not an uncompressed P-256 point")
	}
	return out, nil
}
