package escrow

import (
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/internal/p256"
)

// A version 3 seal proof is the same Schnorr proof as version 2, sent as
// its commitment instead of its challenge:
//
//	k random, A = k·G
//	c = hash_to_field(transcript(key ID, target, SHA-256(ciphertext), G, R, A)) (RFC 9380, DST sealProofV3DST)
//	z = k + c·r mod n
//
// The proof is A ‖ z: A compressed (33 bytes, SEC1), z 32 bytes big-endian
// below n; in the transcript A is those 33 bytes. The verifier recomputes
// c and checks z·G = A + c·R. Carrying A makes the check an equation
// between points, and such equations combine: many proofs are checked at
// once by a random linear combination (checkBatchV3), where a version 2
// proof must rebuild its own A and hash it.
//
// The DST differs from version 2's, so no transcript of one version is
// one of the other: a proof made for one version does not verify as the
// other even if its bytes were carried over.
const sealProofV3DST = "custodian envelope seal proof v3"

// sealProofV3Len is A (compressed) ‖ z; a version 2 proof is one byte
// shorter, which is how a warrant's reference tells them apart.
const sealProofV3Len = p256.CompressedLen + p256.ScalarLen

// proveSealV3 proves knowledge of r (32 bytes) for st.enc = r·G. k·G and
// z are constant time (nistec, bigmod): k and r are secret.
func proveSealV3(st *sealStatement, r []byte) ([]byte, error) {
	k, err := p256.RandomScalar()
	if err != nil {
		return nil, err
	}
	defer k.Erase()
	A, err := p256.MulGen(k.Bytes())
	if err != nil {
		return nil, err
	}
	a, err := p256.EncodeCompressed(A)
	if err != nil {
		return nil, err
	}
	rn, err := p256.ParseScalar(r)
	if err != nil {
		return nil, errors.New("the ephemeral key is not a scalar")
	}
	defer rn.Erase()
	cn, err := p256.ParseScalar(st.challengeWith(a, sealProofV3DST))
	if err != nil {
		return nil, err
	}
	z := k.Add(rn.Mul(cn)).Bytes()
	return append(a, z...), nil
}

// claimV3 is a parsed version 3 proof with its statement's R and its
// recomputed challenge: what the check's equation z·G = A + c·R needs.
type claimV3 struct {
	A, R *p256.Point
	c, z *p256.Scalar
}

// parseV3 decodes a version 3 proof for st (already checked) and hashes
// its challenge.
func parseV3(st *sealStatement, proof []byte) (*claimV3, error) {
	a, zb := proof[:p256.CompressedLen], proof[p256.CompressedLen:]
	A, err := p256.ParseCompressed(a)
	if err != nil {
		return nil, errors.New("its seal proof's commitment is not a point of the curve")
	}
	z, err := p256.ParseScalar(zb)
	if err != nil {
		return nil, errors.New("its seal proof holds a number that is not a canonical scalar")
	}
	R, err := parsePoint(st.enc)
	if err != nil {
		return nil, fmt.Errorf("its encapsulated key is %v", err)
	}
	c, err := p256.ParseScalar(st.challengeWith(a, sealProofV3DST))
	if err != nil {
		return nil, err
	}
	return &claimV3{A: A, R: R, c: c, z: z}, nil
}

var errSealMismatch = errors.New("its seal proof does not match it: it was not made by whoever drew its encapsulated key, for this key ID, target and ciphertext")

// holds checks z·G − c·R = A on its own.
func (cl *claimV3) holds() bool {
	zG, err1 := p256.MulGen(cl.z.Bytes())
	cR, err2 := p256.Mul(cl.R, cl.c.Bytes())
	if err1 != nil || err2 != nil {
		return false
	}
	zG.Add(zG, cR.Negate(cR))
	zG.Add(zG, p256.Identity().Negate(cl.A))
	return zG.IsInfinity() == 1
}

// verifySealV3 checks one version 3 proof for st (already checked).
func verifySealV3(st *sealStatement, proof []byte) error {
	cl, err := parseV3(st, proof)
	if err != nil {
		return err
	}
	if !cl.holds() {
		return errSealMismatch
	}
	return nil
}

// weightLen is a batch weight: 128 bits, P-256's security level.
const weightLen = 16

// checkBatchV3 checks Σ w_i·(z_i·G − A_i − c_i·R_i) = 0 with weights w_i
// drawn from the CSPRNG now, after every proof is fixed: one sum of
// multiples of the A_i by w_i and the R_i by w_i·c_i, and one fixed-base
// multiplication by Σ w_i·z_i. If some term D_i = z_i·G − A_i − c_i·R_i is
// not the identity, then for any values of the other weights at most one
// w_i modulo the prime order n cancels it, so a batch holding a false
// proof passes with probability at most 2⁻¹²⁸ (Bellare–Garay–Rabin's
// small-exponent test). The prover never sees the weights: they are
// drawn by the verifier and thrown away.
func checkBatchV3(claims []*claimV3) (bool, error) {
	w := make([]byte, weightLen*len(claims))
	if _, err := rand.Read(w); err != nil {
		return false, err
	}
	points := make([]*p256.Point, 0, 2*len(claims))
	scalars := make([][]byte, 0, 2*len(claims))
	wz := p256.ReduceScalar([]byte{0})
	for i, cl := range claims {
		wi := w[weightLen*i : weightLen*(i+1)]
		ws := p256.ReduceScalar(wi)
		points = append(points, cl.A, cl.R)
		scalars = append(scalars, wi, ws.Clone().Mul(cl.c).Bytes())
		wz.Add(ws.Mul(cl.z))
	}
	sum, err := p256.SumOfMultiples(points, scalars)
	if err != nil {
		return false, err
	}
	zG, err := p256.MulGen(wz.Bytes())
	if err != nil {
		return false, err
	}
	sum.Add(sum, zG.Negate(zG))
	return sum.IsInfinity() == 1, nil
}

// minBatch is the fewest version 3 proofs worth a sum of multiples per
// CPU; below it the batch is not split.
const minBatch = 64

// CheckSealProofs checks the seal proofs of many envelopes, as a warrant
// names them (version 2 or 3 proofs, told apart by length). Version 3
// proofs are checked together: one random linear combination per CPU
// (checkBatchV3), and, for a combination that fails, each of its proofs
// on its own, so that the false ones are named. Version 2 proofs carry
// no commitment to combine and are checked one by one. It returns nil
// when every proof verifies, and otherwise one error per reference (nil
// for those that verify), each wrapping ErrEnvelope and ErrUnproven.
func CheckSealProofs(refs []warrant.EnvelopeRef) []error {
	errs := make([]error, len(refs))
	failed := false
	fail := func(i int, err error) {
		errs[i], failed = &unprovenError{detail: err.Error()}, true
	}
	claims := make([]*claimV3, len(refs))
	var v3 []int
	forEach(len(refs), func(i int) {
		r := refs[i]
		st := &sealStatement{keyID: r.KeyID, target: r.Target, digest: r.CiphertextSHA256, enc: r.Enc}
		if len(r.Proof) != sealProofV3Len {
			if err := verifySeal(st, r.Proof); err != nil {
				errs[i] = err
			}
			return
		}
		var err error
		if err = st.check(); err == nil {
			claims[i], err = parseV3(st, r.Proof)
		}
		errs[i] = err
	})
	for i := range refs {
		switch {
		case errs[i] != nil:
			fail(i, errs[i])
		case claims[i] != nil:
			v3 = append(v3, i)
		}
	}
	chunks := splitBatch(len(v3))
	forEach(len(chunks), func(k int) {
		idx := v3[chunks[k][0]:chunks[k][1]]
		batch := make([]*claimV3, len(idx))
		for j, i := range idx {
			batch[j] = claims[i]
		}
		if ok, err := checkBatchV3(batch); ok && err == nil {
			return
		}
		// Name the false ones (or, had the CSPRNG failed, check each).
		for _, i := range idx {
			if !claims[i].holds() {
				errs[i] = errSealMismatch
			}
		}
	})
	for _, i := range v3 {
		if errs[i] != nil {
			fail(i, errs[i])
		}
	}
	if !failed {
		return nil
	}
	return errs
}

// splitBatch cuts n proofs into one range per CPU, each of at least
// minBatch (all of them when fewer).
func splitBatch(n int) [][2]int {
	parts := max(1, min(runtime.GOMAXPROCS(0), n/minBatch))
	out := make([][2]int, 0, parts)
	for k := range parts {
		out = append(out, [2]int{k * n / parts, (k + 1) * n / parts})
	}
	if n == 0 {
		return nil
	}
	return out
}

// forEach runs f(0..n-1) on every CPU.
func forEach(n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := int(next.Add(1) - 1); j < n; j = int(next.Add(1) - 1) {
				f(j)
			}
		}()
	}
	wg.Wait()
}

// FirstFailure is the first error of errs (as CheckSealProofs returns
// them) and its index, or -1 and nil.
func FirstFailure(errs []error) (int, error) {
	for i, err := range errs {
		if err != nil {
			return i, err
		}
	}
	return -1, nil
}
