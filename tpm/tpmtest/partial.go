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
// ECDH_ZGen, Commit and ECDAA Sign would (see tpm/dleq.go): for tests and
// benchmarks of the verifier that need many custodians without a TPM each.
func SoftwarePartial(t testing.TB, share, r []byte) tpm.Partial {
	t.Helper()
	g := group.P256
	s, k := g.NewScalar(), g.RandomNonZeroScalar(rand.Reader)
	R, B := g.NewElement(), g.NewElement()
	if s.UnmarshalBinary(share) != nil || R.UnmarshalBinary(r) != nil || B.UnmarshalBinary(tpm.ProofBase()) != nil {
		t.Fatal("SoftwarePartial: bad share or point")
	}
	enc := func(e group.Element) []byte {
		b, err := e.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	P, E, L := enc(g.NewElement().Mul(R, s)), enc(g.NewElement().Mul(R, k)), enc(g.NewElement().Mul(B, k))
	proofKey, err := tpm.ProofKey(share)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.New()
	d.Write([]byte("custodian scoped partial v1\x00"))
	for _, pt := range [][]byte{tpm.ProofBase(), proofKey, r, P, E, L} {
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
	return tpm.Partial{Point: P, E: E, L: L, NonceK: nonce, S: S}
}
