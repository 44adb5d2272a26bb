package tpmtest

import (
	"crypto/rand"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/cloudflare/circl/group"

	"github.com/custodian-project/custodian/tpm"
)

// SoftwarePartial computes s·R and its proof in software, as a TPM's
// ECDH_ZGen, Commit and ECDAA Sign would (see tpm/dleq.go), without a
// blind: for tests and benchmarks of the verifier that need many
// custodians without a TPM each.
func SoftwarePartial(t testing.TB, share, r []byte) tpm.Partial {
	t.Helper()
	proofKey, err := tpm.ProofKey(share)
	if err != nil {
		t.Fatal(err)
	}
	return SoftwareProof(t, share, proofKey, r, mul(t, r, share))
}

// SoftwareProof is what a TPM holding share signs when its host hands it
// the digest of any statement (proof key, R, point): an honest partial
// when the statement is true, the best a lying custodian can do otherwise.
func SoftwareProof(t testing.TB, share, proofKey, r, point []byte) tpm.Partial {
	t.Helper()
	g := group.P256
	s, k := g.NewScalar(), g.RandomNonZeroScalar(rand.Reader)
	if s.UnmarshalBinary(share) != nil {
		t.Fatal("SoftwareProof: the share is not a scalar")
	}
	kb, _ := k.MarshalBinary()
	E, L := mul(t, r, kb), mul(t, tpm.ProofBase(), kb)
	d := sha256.New()
	d.Write([]byte("custodian scoped partial v1\x00"))
	for _, pt := range [][]byte{tpm.ProofBase(), proofKey, r, point, E, L} {
		d.Write(pt)
	}
	nonce := make([]byte, 32)
	rand.Read(nonce)
	c := sha256.Sum256(append(append([]byte{}, nonce...), d.Sum(nil)...))
	cs := g.NewScalar().SetBigInt(new(big.Int).SetBytes(c[:]))
	S, err := g.NewScalar().Add(k, g.NewScalar().Mul(cs, s)).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return tpm.Partial{Point: append([]byte{}, point...), E: E, L: L, NonceK: nonce, S: S}
}

// SoftwareBatch computes, in software, a batch of partials of points with
// its one proof, as a TPM holding share would for tpm.PartialsBatch. lie,
// when not nil, may replace partial i before the proof is made: the best a
// custodian whose software changes a partial can do.
func SoftwareBatch(t testing.TB, share []byte, points [][]byte, lie func(i int, partial []byte) []byte) *tpm.Batch {
	t.Helper()
	proofKey, err := tpm.ProofKey(share)
	if err != nil {
		t.Fatal(err)
	}
	partials := make([][]byte, len(points))
	for i, r := range points {
		partials[i] = mul(t, r, share)
		if lie != nil {
			partials[i] = lie(i, partials[i])
		}
	}
	g := group.P256
	rStar, pStar := g.Identity(), g.Identity()
	for i, w := range tpm.BatchWeights(points, partials) {
		wb, _ := w.MarshalBinary()
		rStar.Add(rStar, decode(t, mul(t, points[i], wb)))
		pStar.Add(pStar, decode(t, mul(t, partials[i], wb)))
	}
	rho := g.RandomNonZeroScalar(rand.Reader)
	blind, _ := rho.MarshalBinary()
	r, _ := g.NewElement().Mul(rStar, rho).MarshalBinary()
	p, _ := g.NewElement().Mul(pStar, rho).MarshalBinary()
	proof := SoftwareProof(t, share, proofKey, r, p)
	return &tpm.Batch{Partials: partials, Proof: tpm.BatchProof{E: proof.E, L: proof.L, NonceK: proof.NonceK, S: proof.S, Blind: blind}}
}

func decode(t testing.TB, point []byte) group.Element {
	t.Helper()
	e := group.P256.NewElement()
	if e.UnmarshalBinary(point) != nil {
		t.Fatal("tpmtest: not a point")
	}
	return e
}

// mul is scalar·point, both encoded.
func mul(t testing.TB, point, scalar []byte) []byte {
	t.Helper()
	g := group.P256
	e, s := g.NewElement(), g.NewScalar()
	if e.UnmarshalBinary(point) != nil || s.UnmarshalBinary(scalar) != nil {
		t.Fatal("tpmtest: not a point and a scalar")
	}
	out, err := g.NewElement().Mul(e, s).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return out
}
