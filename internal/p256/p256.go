// Package p256 is the P-256 arithmetic of scoped mode, on well-kept
// constant-time code: points are filippo.io/nistec's (the standalone form
// of the standard library's crypto/internal/fips140/nistec, with complete
// addition formulas and assembly field arithmetic), scalars modulo the
// group order n are filippo.io/bigmod's. Nothing here touches a
// coordinate or a field element.
//
// The contract: every point that comes in is an uncompressed SEC1
// encoding on the curve and not the identity ([ParsePoint]); every point
// that goes out is one too ([Encode] refuses the identity); a scalar that
// comes in is canonical (below n). P-256 has cofactor 1, so a point on the
// curve is in the group.
//
// Timing: [Mul], [Scalar] arithmetic and [Inverse] are constant time in
// their operands. [SumOfMultiples] is constant time in the points but not
// in the scalars, which must be public (batch weights, Lagrange
// coefficients).
package p256

import (
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"math/big"
	"sync"

	"filippo.io/bigmod"
	"filippo.io/nistec"
)

// Point is a P-256 point.
type Point = nistec.P256Point

// PointLen is an uncompressed point: 0x04, x, y.
const PointLen = 65

// ScalarLen is a scalar, big-endian.
const ScalarLen = 32

// ErrNotPoint is returned for anything but an uncompressed point on the
// curve other than the identity.
var ErrNotPoint = errors.New("not an uncompressed P-256 point")

// ParsePoint decodes an uncompressed point, checking it is on the curve;
// the identity has no uncompressed encoding, so it is refused too.
func ParsePoint(b []byte) (*Point, error) {
	if len(b) != PointLen || b[0] != 4 {
		return nil, ErrNotPoint
	}
	p, err := nistec.NewP256Point().SetBytes(b)
	if err != nil {
		return nil, ErrNotPoint
	}
	return p, nil
}

// Encode is p uncompressed, refusing the identity.
func Encode(p *Point) ([]byte, error) {
	if p.IsInfinity() == 1 {
		return nil, errors.New("the point is the identity")
	}
	return p.Bytes(), nil
}

// Identity is a new identity point.
func Identity() *Point { return nistec.NewP256Point() }

// Generator is a new G.
func Generator() *Point { return nistec.NewP256Point().SetGenerator() }

// Mul is k·p for a scalar of ScalarLen bytes, in constant time.
func Mul(p *Point, k []byte) (*Point, error) {
	return nistec.NewP256Point().ScalarMult(p, k)
}

// MulGen is k·G, in constant time.
func MulGen(k []byte) (*Point, error) {
	return nistec.NewP256Point().ScalarBaseMult(k)
}

// order is n, the order of G.
var order = sync.OnceValue(func() *bigmod.Modulus {
	m, err := bigmod.NewModulus(elliptic.P256().Params().N.Bytes())
	if err != nil {
		panic("p256: the group order is not a modulus")
	}
	return m
})

// orderMinusTwo is the exponent of Fermat inversion.
var orderMinusTwo = sync.OnceValue(func() []byte {
	e := new(big.Int).Sub(elliptic.P256().Params().N, big.NewInt(2))
	return e.FillBytes(make([]byte, ScalarLen))
})

// Scalar is a number modulo n.
type Scalar struct{ n bigmod.Nat }

// ParseScalar decodes a canonical scalar: ScalarLen bytes, below n.
func ParseScalar(b []byte) (*Scalar, error) {
	s := new(Scalar)
	if len(b) != ScalarLen {
		return nil, errors.New("a scalar is 32 bytes")
	}
	if _, err := s.n.SetBytes(b, order()); err != nil {
		return nil, errors.New("the scalar is not below the group order")
	}
	return s, nil
}

// ReduceScalar is b modulo n, for b of at most 32 bytes (a hash).
func ReduceScalar(b []byte) *Scalar {
	s := new(Scalar)
	if _, err := s.n.SetOverflowingBytes(b, order()); err != nil {
		panic("p256: a reduced scalar is longer than the order")
	}
	return s
}

// RandomScalar draws a uniform nonzero scalar.
func RandomScalar() (*Scalar, error) {
	b := make([]byte, ScalarLen)
	defer clear(b)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		s, err := ParseScalar(b)
		if err == nil && s.n.IsZero() == 0 {
			return s, nil
		}
	}
}

// Bytes is s, ScalarLen bytes big-endian.
func (s *Scalar) Bytes() []byte { return s.n.Bytes(order()) }

// IsZero reports whether s is zero.
func (s *Scalar) IsZero() bool { return s.n.IsZero() == 1 }

// Mul sets s = s·t and returns s.
func (s *Scalar) Mul(t *Scalar) *Scalar {
	s.n.Mul(&t.n, order())
	return s
}

// Add sets s = s + t and returns s.
func (s *Scalar) Add(t *Scalar) *Scalar {
	s.n.Add(&t.n, order())
	return s
}

// Inverse is s⁻¹ = s^(n−2), in constant time; zero for zero.
func (s *Scalar) Inverse() *Scalar {
	out := new(Scalar)
	out.n.Exp(&s.n, orderMinusTwo(), order())
	return out
}

// Erase sets s to zero, for a secret no longer needed.
func (s *Scalar) Erase() {
	if _, err := s.n.SetBytes(make([]byte, ScalarLen), order()); err != nil {
		panic("p256: zero is not a scalar")
	}
}

// Clone is a copy of s.
func (s *Scalar) Clone() *Scalar {
	c, err := ParseScalar(s.Bytes())
	if err != nil {
		panic("p256: a scalar does not parse back")
	}
	return c
}

// CompressedLen is a compressed point: 0x02 or 0x03, then x.
const CompressedLen = 33

// ParseCompressed decodes a compressed point, checking it is on the
// curve; the identity has no compressed encoding, so it is refused too.
func ParseCompressed(b []byte) (*Point, error) {
	if len(b) != CompressedLen || (b[0] != 2 && b[0] != 3) {
		return nil, errors.New("not a compressed P-256 point")
	}
	p, err := nistec.NewP256Point().SetBytes(b)
	if err != nil {
		return nil, errors.New("not a compressed P-256 point")
	}
	return p, nil
}

// EncodeCompressed is p compressed, refusing the identity.
func EncodeCompressed(p *Point) ([]byte, error) {
	if p.IsInfinity() == 1 {
		return nil, errors.New("the point is the identity")
	}
	return p.BytesCompressed(), nil
}
