package p256

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"testing"
	"time"
)

func randomPoint(t testing.TB) []byte {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

// TestSumOfMultiplesMatchesOneMultiplicationEach checks the bucket method
// against separate constant-time multiplications, for term counts on both
// sides of the switch and scalars of 128 and 256 bits.
func TestSumOfMultiplesMatchesOneMultiplicationEach(t *testing.T) {
	for _, n := range []int{1, 2, 7, 40, 300} {
		for _, size := range []int{16, 32} {
			t.Run(fmt.Sprintf("n=%d/bytes=%d", n, size), func(t *testing.T) {
				points := make([]*Point, n)
				scalars := make([][]byte, n)
				for i := range points {
					var err error
					if points[i], err = ParsePoint(randomPoint(t)); err != nil {
						t.Fatal(err)
					}
					s, err := RandomScalar()
					if err != nil {
						t.Fatal(err)
					}
					scalars[i] = s.Bytes()[ScalarLen-size:]
				}
				scalars[0] = make([]byte, size) // a zero digit everywhere
				got := buckets(points, scalars, 8*size, 5)
				want, err := sumOfProducts(points, scalars)
				if err != nil {
					t.Fatal(err)
				}
				fast, err := SumOfMultiples(points, scalars)
				if err != nil {
					t.Fatal(err)
				}
				if got.Equal(want) != 1 || fast.Equal(want) != 1 {
					t.Fatal("the bucket method and the separate multiplications disagree")
				}
				if n > 1 && want.IsInfinity() == 1 {
					t.Fatal("a random sum is the identity")
				}
			})
		}
	}
}

func TestParsePointRefusesWhatIsNotAnUncompressedPoint(t *testing.T) {
	good := randomPoint(t)
	if _, err := ParsePoint(good); err != nil {
		t.Fatal(err)
	}
	offCurve := bytes.Clone(good)
	offCurve[64] ^= 1
	p, _ := ParsePoint(good)
	compressed := p.BytesCompressed()
	for name, b := range map[string][]byte{
		"off the curve": offCurve, "compressed": compressed, "identity": {0},
		"empty": nil, "truncated": good[:64], "long": append(bytes.Clone(good), 0),
	} {
		if _, err := ParsePoint(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Encode(Identity()); err == nil {
		t.Error("the identity encoded")
	}
}

func TestScalarArithmetic(t *testing.T) {
	s, err := RandomScalar()
	if err != nil {
		t.Fatal(err)
	}
	sG, _ := MulGen(s.Bytes())
	back, _ := Mul(sG, s.Inverse().Bytes())
	if back.Equal(Generator()) != 1 {
		t.Fatal("s⁻¹·(s·G) is not G")
	}
	two := ReduceScalar([]byte{2})
	sum := ReduceScalar(s.Bytes()).Add(s)
	if !bytes.Equal(sum.Bytes(), ReduceScalar(s.Bytes()).Mul(two).Bytes()) {
		t.Fatal("s + s is not 2·s")
	}
	if _, err := ParseScalar(bytes.Repeat([]byte{0xff}, 32)); err == nil {
		t.Fatal("a scalar above n accepted")
	}
	s.Erase()
	if !s.IsZero() {
		t.Fatal("erased scalar is not zero")
	}
}

var randomPointBytes = func() []byte {
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	return k.PublicKey().Bytes()
}()

func RandomScalarOrFail(t testing.TB) *Scalar {
	s, err := RandomScalar()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func nanotime() int64 { return time.Now().UnixNano() }

// TestSumOfMultiplesRefusesLongScalars: a scalar longer than ScalarLen is
// refused on every path (one term takes the per-term path, many the
// bucket method), never a panic.
func TestSumOfMultiplesRefusesLongScalars(t *testing.T) {
	g := Generator()
	long := append([]byte{1}, make([]byte, ScalarLen)...)
	for _, n := range []int{1, 2, 10, 200} {
		points, scalars := make([]*Point, n), make([][]byte, n)
		for i := range points {
			points[i], scalars[i] = g, []byte{byte(i + 1)}
		}
		scalars[n-1] = long
		if _, err := SumOfMultiples(points, scalars); err == nil {
			t.Fatalf("%d terms with a %d-byte scalar: no error", n, len(long))
		}
	}
}
