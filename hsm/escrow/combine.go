package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/math/polynomial"

	"github.com/custodian-project/custodian/internal/p256"
)

// PartialShare is one custodian's part of opening one envelope: s_i·R for
// its share s_i and the envelope's encapsulated key R. The share itself
// never leaves the custodian.
type PartialShare struct {
	Index int    // the custodian's share index, 1..n
	Point []byte // s_i·R, uncompressed SEC1 (65 bytes)
}

// pointLen is an uncompressed P-256 point: 0x04, x, y.
const pointLen = 65

// CombinePartials interpolates the partials in the exponent,
// s·R = Σ λ_i(0)·P_i, and returns s·R uncompressed. It needs at least two
// partials with distinct indices; it cannot tell whether they are enough
// or honest (that shows when the envelope opens, or in each custodian's
// proof), but it refuses what is not a point or sums to the identity.
func CombinePartials(partials []PartialShare) ([]byte, error) {
	xs, points, err := parsePartials(partials)
	if err != nil {
		return nil, err
	}
	return combineWith(points, lagrangeAtZero(xs))
}

// lagrangeAtZero is λ_i(0) = Π_{j≠i} x_j/(x_j − x_i) for each x_i, 32
// bytes each: public, from the indices only, and the same for every
// envelope the same custodians combine.
func lagrangeAtZero(xs []group.Scalar) [][]byte {
	zero := g.NewScalar()
	out := make([][]byte, len(xs))
	for i := range xs {
		l, err := polynomial.LagrangeBase(uint(i), xs, zero).MarshalBinary()
		if err != nil {
			panic("escrow: a Lagrange coefficient does not encode")
		}
		out[i] = l
	}
	return out
}

// combineWith is Σ λ_i·P_i, refusing the identity: a sum of multiples,
// constant time in the partials (internal/p256).
func combineWith(points []*p256.Point, lambdas [][]byte) ([]byte, error) {
	sum, err := p256.SumOfMultiples(points, lambdas)
	if err != nil {
		return nil, errors.New("partials: they do not combine")
	}
	out, err := p256.Encode(sum)
	if err != nil {
		return nil, errors.New("partials: they combine to the identity")
	}
	return out, nil
}

// parsePartials checks the indices before any arithmetic: a repeated
// index makes a Lagrange denominator zero, which circl inverts to zero
// without an error, silently dropping those partials from the sum.
func parsePartials(partials []PartialShare) ([]group.Scalar, []*p256.Point, error) {
	if len(partials) < 2 {
		return nil, nil, fmt.Errorf("partials: %d given; at least 2 are needed", len(partials))
	}
	var seen [MaxCustodians + 1]bool
	xs := make([]group.Scalar, len(partials))
	points := make([]*p256.Point, len(partials))
	for i, p := range partials {
		if p.Index < 1 || p.Index > MaxCustodians {
			return nil, nil, fmt.Errorf("partials: index %d out of 1..%d", p.Index, MaxCustodians)
		}
		if seen[p.Index] {
			return nil, nil, fmt.Errorf("partials: index %d given twice", p.Index)
		}
		seen[p.Index] = true
		e, err := parsePoint(p.Point)
		if err != nil {
			return nil, nil, fmt.Errorf("partials: index %d: %w", p.Index, err)
		}
		xs[i], points[i] = g.NewScalar().SetUint64(uint64(p.Index)), e
	}
	return xs, points, nil
}

// parsePoint accepts only the uncompressed encoding, as every point in the
// escrow formats is: on the curve, not the identity.
func parsePoint(b []byte) (*p256.Point, error) {
	return p256.ParsePoint(b)
}

// OpenWithDH decrypts an envelope for the key ID of pub given dh = s·R,
// the escrow key's Diffie-Hellman with the envelope's R (as
// CombinePartials returns it), without the escrow key itself. The HPKE
// key schedule is crypto/hpke's: dh stands in for the private key in the
// one decapsulation it is good for. Errors wrap ErrEnvelope, as Open's do.
func OpenWithDH(pub *Public, data []byte, dh []byte) (*Envelope, []byte, error) {
	env, err := ParseEnvelope(data)
	if err != nil {
		return nil, nil, err
	}
	return openWithDH(pub, env, dh)
}

// openWithDH is OpenWithDH on an envelope parsed (and its proof checked).
func openWithDH(pub *Public, env *Envelope, dh []byte) (*Envelope, []byte, error) {
	if env.KeyID != pub.KeyID {
		return nil, nil, fmt.Errorf("%w: it is for key ID %q, this escrow file is for %q", ErrEnvelope, env.KeyID, pub.KeyID)
	}
	ck, err := newCombinedKey(pub.PublicKey, env.Enc, dh)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	kem, kdf, aead := envelopeSuite()
	sk, err := hpke.NewDHKEMPrivateKey(ck)
	if err != nil || sk.KEM().ID() != kem.ID() {
		// combinedKey is P-256 only; this catches a change of suite.
		return nil, nil, fmt.Errorf("%w: the envelope suite is not DHKEM(P-256)", ErrEnvelope)
	}
	r, err := hpke.NewRecipient(env.Enc, sk, kdf, aead, envelopeInfo(env.KeyID, env.Target))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	pt, err := r.Open(nil, env.ciphertext)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: wrong partials, or the envelope was altered", ErrEnvelope)
	}
	return env, pt, nil
}

// combinedKey is an ecdh.KeyExchanger that knows s·R for one R and
// nothing else: ECDH with any other peer fails, so it cannot be mistaken
// for the escrow key. PublicKey must be the real s·G: DHKEM hashes it,
// with R, into the shared secret.
type combinedKey struct {
	pub *ecdh.PublicKey
	enc []byte // R, uncompressed
	x   []byte // x-coordinate of s·R: what ECDH returns on P-256
}

func newCombinedKey(publicKey, enc, dh []byte) (*combinedKey, error) {
	pub, err := ecdh.P256().NewPublicKey(publicKey)
	if err != nil {
		return nil, fmt.Errorf("escrow public key: %v", err)
	}
	// Uncompressed, on the curve, not the identity; then x is dh[1:33].
	if _, err := ecdh.P256().NewPublicKey(dh); err != nil {
		return nil, errors.New("the combined point is not an uncompressed P-256 point")
	}
	return &combinedKey{pub: pub, enc: bytes.Clone(enc), x: bytes.Clone(dh[1:33])}, nil
}

func (k *combinedKey) PublicKey() *ecdh.PublicKey { return k.pub }

func (k *combinedKey) Curve() ecdh.Curve { return ecdh.P256() }

func (k *combinedKey) ECDH(peer *ecdh.PublicKey) ([]byte, error) {
	if peer.Curve() != ecdh.P256() || !bytes.Equal(peer.Bytes(), k.enc) {
		return nil, errors.New("escrow: the combined point is for another encapsulated key")
	}
	return bytes.Clone(k.x), nil
}
