package p256

import (
	"fmt"
	"testing"

	"github.com/cloudflare/circl/group"
)

// BenchmarkArithmetic measures each operation beside one constant-time
// multiplication k·P in the same run ("x-mult": its cost in those), and
// circl's big.Int-based multiplication, which scoped mode used before.
func BenchmarkArithmetic(b *testing.B) {
	p, _ := ParsePoint(randomPoint(b))
	k, _ := RandomScalar()
	kb := k.Bytes()
	cp := group.P256.NewElement()
	_ = cp.UnmarshalBinary(p.Bytes())
	ck := group.P256.NewScalar()
	_ = ck.UnmarshalBinary(kb)
	const terms = 10000
	points := make([]*Point, terms)
	weights := make([][]byte, terms)
	for i := range points {
		points[i] = p
		weights[i] = RandomScalarOrFail(b).Bytes()[16:]
	}
	for _, c := range []struct {
		name string
		per  int
		op   func()
	}{
		{"nistec-mult", 1, func() { Mul(p, kb) }},
		{"nistec-mult-gen", 1, func() { MulGen(kb) }},
		{"circl-mult", 1, func() { group.P256.NewElement().Mul(cp, ck) }},
		{"inverse", 1, func() { k.Inverse() }},
		{"parse", 1, func() { ParsePoint(randomPointBytes) }},
		{fmt.Sprintf("sum-of-multiples/128-bit/per-term/n=%d", terms), terms, func() { SumOfMultiples(points, weights) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			var op, mult int64
			for b.Loop() {
				t0 := nanotime()
				c.op()
				t1 := nanotime()
				for range c.per {
					Mul(p, kb)
				}
				op, mult = op+t1-t0, mult+nanotime()-t1
			}
			b.ReportMetric(float64(op)/float64(b.N*c.per), "op-ns")
			b.ReportMetric(float64(op)/float64(mult), "x-mult")
		})
	}
}
