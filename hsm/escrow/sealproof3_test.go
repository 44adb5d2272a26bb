package escrow

import (
	"crypto/elliptic"
	"errors"
	"math/big"
	"testing"

	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/internal/p256"
)

// honestRefs seals count version 3 envelopes and returns their references.
func honestRefs(tb testing.TB, count int) ([][]byte, []warrant.EnvelopeRef) {
	tb.Helper()
	_, pub := testKey(tb, "2026-11")
	envs := make([][]byte, count)
	refs := make([]warrant.EnvelopeRef, count)
	parallelFor(tb, count, func(i int) error {
		envs[i] = sealV3(tb, pub, "alice@example.org", []byte{byte(i)})
		env, err := ParseEnvelope(envs[i])
		if err == nil {
			refs[i] = env.Ref()
		}
		return err
	})
	return envs, refs
}

// claimsOf parses the version 3 proofs of refs.
func claimsOf(t *testing.T, refs []warrant.EnvelopeRef) []*claimV3 {
	t.Helper()
	out := make([]*claimV3, len(refs))
	for i, r := range refs {
		cl, err := parseV3(&sealStatement{keyID: r.KeyID, target: r.Target, digest: r.CiphertextSHA256, enc: r.Enc}, r.Proof)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = cl
	}
	return out
}

// TestSealProofBatchHoldsForHonestProofs: the combined equation holds for
// honest proofs without falling back (a term left out of the sum, or a
// weight left off one, makes it fail), and fails when one z is off.
func TestSealProofBatchHoldsForHonestProofs(t *testing.T) {
	_, refs := honestRefs(t, 300)
	claims := claimsOf(t, refs)
	for _, n := range []int{1, 2, 300} {
		if ok, err := checkBatchV3(claims[:n]); !ok || err != nil {
			t.Fatalf("%d honest proofs: the batch fails (%v)", n, err)
		}
	}
	one := p256.ReduceScalar([]byte{1})
	for _, at := range []int{0, 123, len(claims) - 1} {
		z := claims[at].z
		claims[at].z = z.Clone().Add(one)
		if ok, _ := checkBatchV3(claims); ok {
			t.Fatalf("a batch with z %d off by one holds", at)
		}
		claims[at].z = z
	}
}

// TestInvariantSealProofBatchWeightsCatchCancellingForgeries: two proofs
// whose errors cancel in a plain sum (z₁ + δ and z₂ − δ: each check
// fails, their sum holds) fail the batch, because each is weighted by a
// fresh random 128-bit weight; CheckSealProofs names both.
func TestInvariantSealProofBatchWeightsCatchCancellingForgeries(t *testing.T) {
	_, refs := honestRefs(t, 200)
	delta, err := p256.RandomScalar()
	if err != nil {
		t.Fatal(err)
	}
	minusDelta := negate(t, delta)
	shift := func(r *warrant.EnvelopeRef, d *p256.Scalar) {
		z, err := p256.ParseScalar(r.Proof[p256.CompressedLen:])
		if err != nil {
			t.Fatal(err)
		}
		r.Proof = append(append([]byte{}, r.Proof[:p256.CompressedLen]...), z.Add(d).Bytes()...)
	}
	shift(&refs[17], delta)
	shift(&refs[60], minusDelta) // in the same combination as 17: each has at least 64 proofs
	if ok, _ := checkBatchV3(claimsOf(t, refs)); ok {
		t.Fatal("one combination of the cancelling pair holds")
	}
	errs := CheckSealProofs(refs)
	for i, err := range errs {
		if forged := i == 17 || i == 60; forged != (err != nil) || (forged && !errors.Is(err, ErrUnproven)) {
			t.Errorf("envelope %d: %v", i, err)
		}
	}
	if errs == nil {
		t.Fatal("a pair of cancelling forgeries passed")
	}
}

// negate is −s.
func negate(t *testing.T, s *p256.Scalar) *p256.Scalar {
	nm1 := new(big.Int).Sub(elliptic.P256().Params().N, big.NewInt(1)).FillBytes(make([]byte, 32))
	m, err := p256.ParseScalar(nm1)
	if err != nil {
		t.Fatal(err)
	}
	return s.Clone().Mul(m)
}

// TestSealProofBatchOf10000NamesTheForgedOne: among 10,000 version 3
// references checked together, one requester-made reference (at the
// start, in the middle, at the end) is named, and only it.
func TestSealProofBatchOf10000NamesTheForgedOne(t *testing.T) {
	envs, refs := honestRefs(t, 10_000)
	if errs := CheckSealProofs(refs); errs != nil {
		t.Fatalf("honest references: %v", errs)
	}
	forgeries := escrowtest.Forgeries(t, envs[0], envs[1])
	for k, at := range []int{0, 6789, len(refs) - 1} {
		f := forgeries[k%len(forgeries)]
		batch := append([]warrant.EnvelopeRef(nil), refs...)
		batch[at] = f.Ref
		errs := CheckSealProofs(batch)
		for i, err := range errs {
			if (i == at) != (err != nil) {
				t.Fatalf("%s at %d: envelope %d: %v", f.Name, at, i, err)
			}
		}
		if i, err := FirstFailure(errs); i != at || !errors.Is(err, ErrUnproven) || !errors.Is(err, ErrEnvelope) {
			t.Fatalf("%s at %d: named %d (%v)", f.Name, at, i, err)
		}
	}
}

// TestSealProofVersionsAreDomainSeparated: a version 2 proof's challenge
// and a version 3 proof's are hashed under different labels, so the same
// transcript gives different challenges; and a proof of one version
// carried into the other's envelope or reference fails.
func TestSealProofVersionsAreDomainSeparated(t *testing.T) {
	_, pub := testKey(t, "2026-11")
	v3, err := ParseEnvelope(sealV3(t, pub, "alice@example.org", []byte("m")))
	if err != nil {
		t.Fatal(err)
	}
	st := &sealStatement{keyID: v3.KeyID, target: v3.Target, digest: v3.CiphertextSHA256(), enc: v3.Enc}
	a := v3.Proof[:p256.CompressedLen]
	if string(st.challenge(a)) == string(st.challengeWith(a, sealProofV3DST)) {
		t.Fatal("the versions hash one transcript to one challenge")
	}
	// A version 3 proof recast as c ‖ z with its own challenge.
	recast := append(st.challengeWith(a, sealProofV3DST), v3.Proof[p256.CompressedLen:]...)
	if err := CheckSealProof(v3.KeyID, v3.Target, v3.Enc, v3.CiphertextSHA256(), recast); !errors.Is(err, ErrUnproven) {
		t.Fatalf("a version 3 proof recast as version 2 verifies: %v", err)
	}
	v2, err := ParseEnvelope(sealV2(t, pub, "alice@example.org", []byte("m")))
	if err != nil {
		t.Fatal(err)
	}
	// A version 2 proof recast as A ‖ z with its own A = z·G − c·R.
	c, z := v2.Proof[:32], v2.Proof[32:]
	R, _ := p256.ParsePoint(v2.Enc)
	A, _ := p256.MulGen(z)
	cR, _ := p256.Mul(R, c)
	A.Add(A, cR.Negate(cR))
	aC, err := p256.EncodeCompressed(A)
	if err != nil {
		t.Fatal(err)
	}
	ref := v2.Ref()
	ref.Proof = append(aC, z...)
	if errs := CheckSealProofs([]warrant.EnvelopeRef{ref}); errs == nil {
		t.Fatal("a version 2 proof recast as version 3 verifies")
	}
}
