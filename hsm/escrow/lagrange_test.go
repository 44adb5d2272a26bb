package escrow

import (
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"testing"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/math/polynomial"

	"github.com/custodian-project/custodian/internal/p256"
)

// lagrangeAtZero is λ_i(0) for each index, 32 bytes each, from circl's
// polynomial package: the textbook coefficients, one full multiplication
// each.
func lagrangeAtZero(xs []int) [][]byte {
	scalars := make([]group.Scalar, len(xs))
	for i, x := range xs {
		scalars[i] = g.NewScalar().SetUint64(uint64(x))
	}
	out := make([][]byte, len(xs))
	for i := range xs {
		out[i], _ = polynomial.LagrangeBase(uint(i), scalars, g.NewScalar()).MarshalBinary()
	}
	return out
}

// TestSmallLagrangeCombinationIsTheTextbookOne checks that combining with
// the small integers c_i = d·λ_i(0) and d⁻¹ gives Σ λ_i(0)·P_i, computed
// with circl's coefficients and one multiplication per partial, for
// index sets with d = 1 and others, in any order, up to the largest
// indices.
func TestSmallLagrangeCombinationIsTheTextbookOne(t *testing.T) {
	sets := [][]int{{1, 2}, {2, 1}, {1, 2, 3}, {3, 1, 2}, {1, 3, 5}, {2, 4, 7, 9}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, {255, 1}, {254, 255, 17, 3}}
	for _, xs := range sets {
		t.Run(fmt.Sprint(xs), func(t *testing.T) {
			points := make([]*p256.Point, len(xs))
			for i := range points {
				k, err := ecdh.P256().GenerateKey(rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				if points[i], err = p256.ParsePoint(k.PublicKey().Bytes()); err != nil {
					t.Fatal(err)
				}
			}
			want := p256.Identity()
			for i, l := range lagrangeAtZero(xs) {
				term, err := p256.Mul(points[i], l)
				if err != nil {
					t.Fatal(err)
				}
				want.Add(want, term)
			}
			got, err := combineWith(points, newLagrange(xs))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want.Bytes()) {
				t.Fatal("the small-integer combination differs from Σ λ_i(0)·P_i")
			}
		})
	}
	if l := newLagrange([]int{1, 2, 3}); l.unscale != nil || l.negate[0] || !l.negate[1] || l.scalars[0][0] != 3 || l.scalars[1][0] != 3 || l.scalars[2][0] != 1 {
		t.Fatalf("{1, 2, 3} should combine as 3·P_1 − 3·P_2 + P_3 with d = 1: %+v", l)
	}
}
