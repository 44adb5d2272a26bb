package p256

import "fmt"

// SumOfMultiples is Σ scalars[i]·points[i] (Pippenger's bucket method,
// built on nistec's complete addition; for a few terms, one constant-time
// multiplication each, which is then cheaper). Each scalar is big-endian,
// at most ScalarLen bytes, and below n. The scalars must be public: which
// bucket a point joins, and whether it joins one, follow their digits; the
// points may be secret, as each addition takes the same time whatever its
// operands.
func SumOfMultiples(points []*Point, scalars [][]byte) (*Point, error) {
	if len(points) != len(scalars) {
		panic("p256: SumOfMultiples needs one scalar per point")
	}
	bits := 0
	for i, s := range scalars {
		if len(s) > ScalarLen {
			return nil, fmt.Errorf("p256: scalar %d has %d bytes, more than %d", i, len(s), ScalarLen)
		}
		bits = max(bits, 8*len(s))
	}
	w := window(len(points), bits)
	if w == 0 {
		return sumOfProducts(points, scalars)
	}
	return buckets(points, scalars, bits, w), nil
}

// additionsPerMult is what one constant-time multiplication costs in
// additions of the bucket method, about (nistec's fixed 4-bit-signed
// windows, on any scalar, against an addition that also doubles).
const additionsPerMult = 150

// window is the bucket method's window for n terms of bits bits that
// adds least, or 0 when n separate multiplications cost less.
func window(n, bits int) int {
	best, bestCost := 0, n*additionsPerMult
	for w := 2; w <= 16; w++ {
		windows := (bits + w - 1) / w
		cost := windows * (n + 2<<w)
		if cost < bestCost {
			best, bestCost = w, cost
		}
	}
	return best
}

func sumOfProducts(points []*Point, scalars [][]byte) (*Point, error) {
	sum := Identity()
	k := make([]byte, ScalarLen)
	for i, p := range points {
		clear(k)
		copy(k[ScalarLen-len(scalars[i]):], scalars[i])
		term, err := Mul(p, k)
		if err != nil {
			return nil, err
		}
		sum.Add(sum, term)
	}
	return sum, nil
}

// buckets runs the bucket method with w-bit windows, from the top: per
// window, each point joins the bucket of its digit, and the buckets sum
// to Σ d·B_d by running sums.
func buckets(points []*Point, scalars [][]byte, bits, w int) *Point {
	acc := Identity()
	bucket := make([]Point, 1<<w)
	for top := ((bits + w - 1) / w) * w; top > 0; top -= w {
		for range w {
			acc.Double(acc)
		}
		for d := range bucket {
			bucket[d].Set(Identity())
		}
		for i, p := range points {
			if d := digit(scalars[i], top-w, w); d != 0 {
				bucket[d].Add(&bucket[d], p)
			}
		}
		running, sum := Identity(), Identity()
		for d := len(bucket) - 1; d > 0; d-- {
			running.Add(running, &bucket[d])
			sum.Add(sum, running)
		}
		acc.Add(acc, sum)
	}
	return acc
}

// digit is bits lo..lo+w-1 of the big-endian s.
func digit(s []byte, lo, w int) int {
	d := 0
	for b := lo + w - 1; b >= lo; b-- {
		d <<= 1
		if b/8 < len(s) {
			d |= int(s[len(s)-1-b/8]>>(b%8)) & 1
		}
	}
	return d
}
