package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/hpke"
	"errors"
	"fmt"
	"math/big"

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
	return combineWith(points, newLagrange(xs))
}

// lagrange is how one set of share indices combines, in small integers:
// λ_i(0) = Π_{j≠i} x_j/(x_j − x_i) is a fraction of integers, so with d a
// common denominator, s·R = d⁻¹·Σ c_i·P_i for the integers c_i = d·λ_i(0).
// The c_i are small for small indices (3, −3 and 1 for {1, 2, 3}, with
// d = 1), and a few additions do what t full multiplications did. It is
// public, from the indices only, and the same for every envelope the same
// custodians combine.
type lagrange struct {
	scalars [][]byte // |c_i| mod n, big-endian, at least one byte
	negate  []bool   // c_i < 0
	unscale []byte   // d⁻¹ mod n (32 bytes), or nil when d = 1
}

// newLagrange computes the combination for indices xs (distinct, 1..255).
func newLagrange(xs []int) *lagrange {
	n := elliptic.P256().Params().N
	nums := make([]*big.Int, len(xs))
	dens := make([]*big.Int, len(xs))
	d := big.NewInt(1)
	for i := range xs {
		nums[i], dens[i] = big.NewInt(1), big.NewInt(1)
		for j := range xs {
			if j != i {
				nums[i].Mul(nums[i], big.NewInt(int64(xs[j])))
				dens[i].Mul(dens[i], big.NewInt(int64(xs[j]-xs[i])))
			}
		}
		// d = lcm(d, |den_i|)
		den := new(big.Int).Abs(dens[i])
		gcd := new(big.Int).GCD(nil, nil, d, den)
		d.Mul(d, den.Quo(den, gcd))
	}
	cs := make([]*big.Int, len(xs))
	common := new(big.Int).Set(d)
	for i := range xs {
		cs[i] = new(big.Int).Mul(nums[i], d)
		cs[i].Quo(cs[i], dens[i]) // exact: den_i divides d
		common.GCD(nil, nil, common, new(big.Int).Abs(cs[i]))
	}
	// Lowest terms: {1, 2, 3} gives 6, −6, 2 over 2, that is 3, −3, 1 over 1.
	d.Quo(d, common)
	l := &lagrange{scalars: make([][]byte, len(xs)), negate: make([]bool, len(xs))}
	for i, c := range cs {
		c.Quo(c, common)
		l.negate[i] = c.Sign() < 0
		c.Abs(c).Mod(c, n)
		l.scalars[i] = c.FillBytes(make([]byte, max(1, (c.BitLen()+7)/8)))
	}
	if d.Cmp(big.NewInt(1)) != 0 {
		l.unscale = new(big.Int).ModInverse(d, n).FillBytes(make([]byte, p256.ScalarLen))
	}
	return l
}

// combineWith is d⁻¹·Σ c_i·P_i, refusing the identity: a sum of
// multiples and at most one multiplication, constant time in the
// partials (internal/p256; the c_i and d are public).
func combineWith(points []*p256.Point, l *lagrange) ([]byte, error) {
	terms := make([]*p256.Point, len(points))
	for i, p := range points {
		terms[i] = p
		if l.negate[i] {
			terms[i] = p256.Identity().Negate(p)
		}
	}
	sum, err := p256.SumOfMultiples(terms, l.scalars)
	if err == nil && l.unscale != nil {
		sum, err = p256.Mul(sum, l.unscale)
	}
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
// index would make a Lagrange denominator zero.
func parsePartials(partials []PartialShare) ([]int, []*p256.Point, error) {
	if len(partials) < 2 {
		return nil, nil, fmt.Errorf("partials: %d given; at least 2 are needed", len(partials))
	}
	var seen [MaxCustodians + 1]bool
	xs := make([]int, len(partials))
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
		xs[i], points[i] = p.Index, e
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
