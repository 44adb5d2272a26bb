package tpm_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"math/big"
	"slices"
	"testing"

	"github.com/cloudflare/circl/group"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func FuzzParseScopedKey(f *testing.F) {
	pcrs := tpm.PCRValues{8: bytes.Repeat([]byte{7}, 32), 9: bytes.Repeat([]byte{9}, 32)}
	eccKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	eccEK, err := tpm.NewImportKey(&eccKey.PublicKey)
	if err != nil {
		f.Fatal(err)
	}
	approver, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, ek := range []*tpm.ImportKey{tpmtest.RandomImportKey(f), eccEK} {
		for _, a := range []*ecdsa.PublicKey{nil, &approver.PublicKey} {
			share, err := ecdh.P256().GenerateKey(rand.Reader)
			if err != nil {
				f.Fatal(err)
			}
			k, err := tpm.SealScoped(ek, pcrs, 1, share.Bytes(), a)
			if err != nil {
				f.Fatal(err)
			}
			data := k.Marshal()
			parsed, err := tpm.ParseScopedKey(data)
			if err != nil {
				f.Fatalf("%s EK, approver %v: a sealed scoped key does not parse: %v", ek.Kind(), a != nil, err)
			}
			if !bytes.Equal(parsed.PublicKey(), share.PublicKey().Bytes()) {
				f.Fatalf("%s EK, approver %v: the parsed key's public point is not s·G", ek.Kind(), a != nil)
			}
			f.Add(data)
			f.Add(data[:len(data)-1])
			f.Add(data[:len(data)/2])
			f.Add(append(bytes.Clone(data), 0))
		}
	}
	f.Add([]byte("CUSTSCOP\x02"))
	f.Add([]byte("CUSTSCOP\x03"))
	f.Add([]byte("CUSTSEAL\x02"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := tpm.ParseScopedKey(data)
		if err != nil {
			if !errors.Is(err, tpm.ErrMalformedBlob) {
				t.Fatalf("refused without ErrMalformedBlob: %v", err)
			}
			return
		}
		// One canonical form: whatever parses re-encodes to the same bytes.
		if !bytes.Equal(k.Marshal(), data) {
			t.Fatal("a parsed scoped key re-encodes differently")
		}
		if !bytes.HasPrefix(data, []byte("CUSTSCOP")) {
			t.Fatal("parsed a scoped key without its magic")
		}
		pub := k.PublicKey()
		if _, err := ecdh.P256().NewPublicKey(pub); err != nil || len(pub) != 65 {
			t.Fatalf("public key %x is not an uncompressed P-256 point: %v", pub, err)
		}
		if k.Approver != nil && k.Approver.Curve != elliptic.P256() {
			t.Fatal("parsed an approver that is not a P-256 key")
		}
	})
}

// FuzzVerifyPartial feeds VerifyPartial arbitrary inputs, around a valid
// proof made by proofModel, around proofs of a wrong point that satisfy
// one of the two equations, and around well-formed but unrelated points. It
// must never panic, must wrap ErrBadProof in every refusal, and must
// accept exactly what modelRelationHolds accepts.
func FuzzVerifyPartial(f *testing.F) {
	m := newProofModel(f)
	r := modelRandomPoint(f)
	valid := m.prove(f, r, modelNonce(f, 32))
	shortNonce := modelNonce(f, 32)
	shortNonce[0] = 0
	stripped := m.prove(f, r, shortNonce[1:])
	for _, p := range []*tpm.Partial{valid, stripped} {
		if _, err := tpm.VerifyPartial(m.proofKey, r, p); err != nil {
			f.Fatalf("the model's proof does not verify: %v", err)
		}
		f.Add(joinPartialFields(m.proofKey, r, p))
	}

	other, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	otherKey, err := tpm.ProofKey(other.Bytes())
	if err != nil {
		f.Fatal(err)
	}
	random := &tpm.Partial{
		Point:  modelRandomPoint(f),
		E:      modelRandomPoint(f),
		L:      modelRandomPoint(f),
		NonceK: modelNonce(f, 32),
		S:      modelRandomScalar(f).FillBytes(make([]byte, 32)),
	}
	zeroS := *random
	zeroS.S = make([]byte, 32)
	orderS := *random
	orderS.S = modelOrder.FillBytes(make([]byte, 32))
	longNonce := *valid
	longNonce.NonceK = modelNonce(f, 33)
	noNonce := *valid
	noNonce.NonceK = nil
	shortS := *valid
	shortS.S = valid.S[1:]
	compressed := *valid
	compressed.Point = modelCompress(f, valid.Point)
	identity := *valid
	identity.E = []byte{0}
	for _, p := range []*tpm.Partial{random, &zeroS, &orderS, &longNonce, &noNonce, &shortS, &compressed, &identity} {
		f.Add(joinPartialFields(otherKey, r, p))
		f.Add(joinPartialFields(m.proofKey, r, p))
	}
	f.Add(joinPartialFields(m.proofKey, modelCompress(f, r), valid))
	wrongPoint := modelMul(f, r, new(big.Int).Add(m.s, big.NewInt(1)))
	forger := &proofModel{s: new(big.Int).Add(m.s, big.NewInt(1))}
	lyingHost := m.proveStatement(f, m.proofKey, r, wrongPoint, modelNonce(f, 32))
	forged := forger.proveStatement(f, m.proofKey, r, wrongPoint, modelNonce(f, 32))
	if onB, onR := modelEquations(m.proofKey, r, lyingHost); !onB || onR {
		f.Fatal("the lying host's proof should satisfy the equation on B only")
	}
	if onB, onR := modelEquations(m.proofKey, r, forged); onB || !onR {
		f.Fatal("the forged proof should satisfy the equation on R only")
	}
	f.Add(joinPartialFields(m.proofKey, r, lyingHost))
	f.Add(joinPartialFields(m.proofKey, r, forged))
	// Proofs over nonces no TPM returns: the equations hold, the format not.
	f.Add(joinPartialFields(m.proofKey, r, m.prove(f, r, nil)))
	f.Add(joinPartialFields(m.proofKey, r, m.prove(f, r, modelNonce(f, 33))))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		proofKey, r, p := partialFields(data)
		_, err := tpm.VerifyPartial(proofKey, r, p)
		if err != nil && !errors.Is(err, tpm.ErrBadProof) {
			t.Fatalf("refused without ErrBadProof: %v", err)
		}
		if err == nil && bytes.Equal(p.S, make([]byte, 32)) {
			t.Fatal("accepted a proof whose S is zero")
		}
		if holds := modelRelationHolds(proofKey, r, p); (err == nil) != holds {
			t.Fatalf("VerifyPartial says %v; the relation holds: %v", err, holds)
		}
	})
}

// TestVerifyPartialAcceptsOnlyTheRelation checks VerifyPartial against
// proofModel, a software model of what the TPM computes with a scoped key:
// a proof the model makes for P = s·R verifies, including one made over a
// nonce whose leading zero byte the TPM stripped; no other statement
// verifies with that proof, and no proof verifies for P = (s+1)·R, whether
// the TPM holding s signs it or someone who knows s+1 but not s makes it.
func TestVerifyPartialAcceptsOnlyTheRelation(t *testing.T) {
	m := newProofModel(t)
	r := modelRandomPoint(t)
	nonceK := modelNonce(t, 32)
	nonceK[0] |= 1 // a TPM returns 32 bytes only when the first is not zero
	p := m.prove(t, r, nonceK)
	if _, err := tpm.VerifyPartial(m.proofKey, r, p); err != nil {
		t.Fatalf("the relation: %v", err)
	}

	padded := modelNonce(t, 32)
	padded[0] = 0
	stripped := m.prove(t, r, padded[1:])
	if _, err := tpm.VerifyPartial(m.proofKey, r, stripped); err != nil {
		t.Fatalf("a proof over a 31-byte nonce: %v", err)
	}

	sPlusOne := new(big.Int).Add(m.s, big.NewInt(1))
	wrongPoint := *p
	wrongPoint.Point = modelMul(t, r, sPlusOne)
	wrongKey := modelMul(t, tpm.ProofBase(), sPlusOne)
	wrongS := *p
	wrongS.S = new(big.Int).Mod(new(big.Int).Add(new(big.Int).SetBytes(p.S), big.NewInt(1)), modelOrder).FillBytes(make([]byte, 32))
	paddedNonce := *stripped
	paddedNonce.NonceK = padded
	otherR := modelRandomPoint(t)
	// The TPM signs whatever digest its host computes: a host that wants
	// another point accepted has the TPM prove the statement with it.
	lyingHost := m.proveStatement(t, m.proofKey, r, wrongPoint.Point, nonceK)
	// Without the TPM, whoever picks x can prove P = x·R for x, but not
	// under the proof key of s.
	forger := &proofModel{s: sPlusOne}
	forged := forger.proveStatement(t, m.proofKey, r, wrongPoint.Point, nonceK)
	for name, c := range map[string]struct {
		proofKey, r []byte
		p           *tpm.Partial
	}{
		"P = (s+1)·R with the proof of s·R": {m.proofKey, r, &wrongPoint},
		"the proof key of s+1":              {wrongKey, r, p},
		"the proof for another R":           {m.proofKey, otherR, p},
		"S + 1":                             {m.proofKey, r, &wrongS},
		"the TPM's proof of P = (s+1)·R":    {m.proofKey, r, lyingHost},
		"a proof of P = (s+1)·R for s+1":    {m.proofKey, r, forged},
		"the nonce zero-padded":             {m.proofKey, r, &paddedNonce},
	} {
		if _, err := tpm.VerifyPartial(c.proofKey, c.r, c.p); !errors.Is(err, tpm.ErrBadProof) {
			t.Errorf("%s: got %v, want ErrBadProof", name, err)
		}
	}
}

var modelOrder = elliptic.P256().Params().N

// proofModel is a software model of what a TPM computes with a scoped key's
// share s for a point R (see dleq.go), so the verifier can be tested
// without a TPM:
//
//   - TPM2_ECDH_ZGen returns P = s·R;
//   - TPM2_Commit(P1 = R, s2) draws r and returns E = r·R, L = r·B and
//     K = s·B, B being tpm.ProofBase();
//   - TPM2_Sign (ECDAA) over d = SHA-256(label ‖ B ‖ K ‖ R ‖ P ‖ E ‖ L)
//     draws nonceK and returns it with S = r + c·s mod n, where
//     c = SHA-256(nonceK ‖ d) mod n.
//
// nonceK is taken from the caller as the TPM returns it: a TPM2B, which
// drops leading zero bytes, hashed as returned.
type proofModel struct {
	s        *big.Int
	proofKey []byte // K = tpm.ProofKey(s)
}

func newProofModel(tb testing.TB) *proofModel {
	tb.Helper()
	s := modelRandomScalar(tb)
	k, err := tpm.ProofKey(s.FillBytes(make([]byte, 32)))
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.Equal(k, modelMul(tb, tpm.ProofBase(), s)) {
		tb.Fatal("tpm.ProofKey(s) is not s·B")
	}
	return &proofModel{s: s, proofKey: k}
}

// prove returns the partial s·R and its proof, made over nonceK.
func (m *proofModel) prove(tb testing.TB, r, nonceK []byte) *tpm.Partial {
	tb.Helper()
	return m.proveStatement(tb, m.proofKey, r, modelMul(tb, r, m.s), nonceK)
}

// proveStatement is what the TPM returns, computing with s, when its host
// hands it the digest of another statement: proof key proofKey and partial
// point. It is the honest proof for proofKey = s·B and point = s·R.
func (m *proofModel) proveStatement(tb testing.TB, proofKey, r, point, nonceK []byte) *tpm.Partial {
	tb.Helper()
	k := modelRandomScalar(tb)
	p := &tpm.Partial{
		Point:  bytes.Clone(point),
		E:      modelMul(tb, r, k),
		L:      modelMul(tb, tpm.ProofBase(), k),
		NonceK: bytes.Clone(nonceK),
	}
	c := modelChallenge(p.NonceK, modelDigest(proofKey, r, p.Point, p.E, p.L))
	s := new(big.Int).Mul(c, m.s)
	s.Add(s, k).Mod(s, modelOrder)
	p.S = s.FillBytes(make([]byte, 32))
	return p
}

// modelRelationHolds is the statement VerifyPartial decides, checked on its
// own: five points that crypto/ecdh takes as uncompressed P-256 points
// (so not the identity), S a 32-byte scalar below n, a nonce of 1 to 32
// bytes, and S·B = L + c·K and S·R = E + c·P for c = SHA-256(nonceK ‖ d).
func modelRelationHolds(proofKey, r []byte, p *tpm.Partial) bool {
	for _, pt := range [][]byte{proofKey, r, p.Point, p.E, p.L} {
		if _, err := ecdh.P256().NewPublicKey(pt); err != nil {
			return false
		}
	}
	if len(p.S) != 32 || new(big.Int).SetBytes(p.S).Cmp(modelOrder) >= 0 {
		return false
	}
	if len(p.NonceK) == 0 || len(p.NonceK) > 32 {
		return false
	}
	onB, onR := modelEquations(proofKey, r, p)
	return onB && onR
}

// modelEquations says whether S·B = L + c·K and whether S·R = E + c·P.
func modelEquations(proofKey, r []byte, p *tpm.Partial) (onB, onR bool) {
	c := modelChallenge(p.NonceK, modelDigest(proofKey, r, p.Point, p.E, p.L))
	s := new(big.Int).SetBytes(p.S)
	return modelSchnorr(tpm.ProofBase(), proofKey, p.L, s, c), modelSchnorr(r, p.Point, p.E, s, c)
}

// schnorrEquation says whether s·base = commit + c·pub.
func modelSchnorr(base, pub, commit []byte, s, c *big.Int) bool {
	lhs, err1 := modelMulElement(base, s)
	cPub, err2 := modelMulElement(pub, c)
	com, err3 := modelElement(commit)
	if err1 != nil || err2 != nil || err3 != nil {
		return false
	}
	return lhs.IsEqual(group.P256.NewElement().Add(cPub, com))
}

func modelDigest(k, r, p, e, l []byte) []byte {
	h := sha256.New()
	h.Write([]byte("custodian scoped partial v1\x00"))
	h.Write(tpm.ProofBase())
	for _, pt := range [][]byte{k, r, p, e, l} {
		h.Write(pt)
	}
	return h.Sum(nil)
}

func modelChallenge(nonceK, digest []byte) *big.Int {
	h := sha256.Sum256(append(bytes.Clone(nonceK), digest...))
	return new(big.Int).Mod(new(big.Int).SetBytes(h[:]), modelOrder)
}

func modelElement(b []byte) (group.Element, error) {
	e := group.P256.NewElement()
	return e, e.UnmarshalBinary(b)
}

func modelMulElement(point []byte, k *big.Int) (group.Element, error) {
	e, err := modelElement(point)
	if err != nil {
		return nil, err
	}
	// SetBigInt reduces its argument in place: give it a copy.
	return group.P256.NewElement().Mul(e, group.P256.NewScalar().SetBigInt(new(big.Int).Set(k))), nil
}

// modelMul is k·point, uncompressed.
func modelMul(tb testing.TB, point []byte, k *big.Int) []byte {
	tb.Helper()
	e, err := modelMulElement(point, k)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := e.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// modelRandomScalar is uniform in 1..n-1.
func modelRandomScalar(tb testing.TB) *big.Int {
	tb.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return new(big.Int).SetBytes(k.Bytes())
}

func modelRandomPoint(tb testing.TB) []byte {
	tb.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

func modelNonce(tb testing.TB, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

func modelCompress(tb testing.TB, point []byte) []byte {
	tb.Helper()
	e, err := modelElement(point)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := e.MarshalBinaryCompress()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// partialFields splits a fuzz input into VerifyPartial's seven inputs, in
// the order proof key, R, P, E, L, nonceK, S: each is a length byte and
// then that many bytes (fewer where the input ends); fields past the end
// are empty and bytes after the seventh are ignored.
func partialFields(data []byte) (proofKey, r []byte, p *tpm.Partial) {
	var f [7][]byte
	for i := range f {
		if len(data) == 0 {
			break
		}
		n := min(int(data[0]), len(data)-1)
		f[i], data = data[1:1+n], data[1+n:]
	}
	return f[0], f[1], &tpm.Partial{Point: f[2], E: f[3], L: f[4], NonceK: f[5], S: f[6]}
}

// joinPartialFields is the inverse of partialFields for fields of at most
// 255 bytes.
func joinPartialFields(proofKey, r []byte, p *tpm.Partial) []byte {
	var out []byte
	for _, b := range [][]byte{proofKey, r, p.Point, p.E, p.L, p.NonceK, p.S} {
		out = append(out, byte(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzVerifyBatch changes one byte of, or cuts, one field of a valid
// batch (a partial or a proof value): VerifyBatch must refuse every
// change, with ErrBadBatch, and never panic.
func FuzzVerifyBatch(f *testing.F) {
	share, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	proofKey, err := tpm.ProofKey(share.Bytes())
	if err != nil {
		f.Fatal(err)
	}
	points := randomPoints(f, 3)
	batch := softwareBatch(f, share.Bytes(), proofKey, points)
	if err := tpm.VerifyBatch(proofKey, points, batch); err != nil {
		f.Fatalf("a software batch does not verify: %v", err)
	}
	for field := range uint8(8) {
		f.Add(field, uint16(0), byte(1), false)
		f.Add(field, uint16(40), byte(0x80), false)
		f.Add(field, uint16(10), byte(0), true)
	}
	f.Fuzz(func(t *testing.T, field uint8, pos uint16, xor byte, cut bool) {
		b := &tpm.Batch{Partials: slices.Clone(batch.Partials), Proof: batch.Proof}
		fields := []*[]byte{&b.Partials[0], &b.Partials[1], &b.Partials[2], &b.Proof.E, &b.Proof.L, &b.Proof.NonceK, &b.Proof.S, &b.Proof.Blind}
		v := fields[int(field)%len(fields)]
		changed := bytes.Clone(*v)
		i := int(pos) % len(changed)
		if cut {
			changed = changed[:i]
		} else if xor == 0 {
			return
		} else {
			changed[i] ^= xor
		}
		*v = changed
		if err := tpm.VerifyBatch(proofKey, points, b); !errors.Is(err, tpm.ErrBadBatch) {
			t.Fatalf("field %d changed at %d: got %v, want ErrBadBatch", int(field)%len(fields), i, err)
		}
	})
}

// softwareBatch makes a batch as PartialsBatch does, with the share in
// software (tpmtest.SoftwareProof) in place of the TPM.
func softwareBatch(t testing.TB, share, proofKey []byte, points [][]byte) *tpm.Batch {
	t.Helper()
	g := group.P256
	s := g.NewScalar()
	if err := s.UnmarshalBinary(share); err != nil {
		t.Fatal(err)
	}
	b := &tpm.Batch{}
	for _, r := range points {
		R := g.NewElement()
		if err := R.UnmarshalBinary(r); err != nil {
			t.Fatal(err)
		}
		p, _ := g.NewElement().Mul(R, s).MarshalBinary()
		b.Partials = append(b.Partials, p)
	}
	w := tpm.BatchWeights(points, b.Partials)
	rStar, pStar := g.Identity(), g.Identity()
	for i := range points {
		R, P := g.NewElement(), g.NewElement()
		_ = R.UnmarshalBinary(points[i])
		_ = P.UnmarshalBinary(b.Partials[i])
		rStar.Add(rStar, R.Mul(R, w[i]))
		pStar.Add(pStar, P.Mul(P, w[i]))
	}
	rho := g.RandomNonZeroScalar(rand.Reader)
	blindR, _ := g.NewElement().Mul(rStar, rho).MarshalBinary()
	blindP, _ := g.NewElement().Mul(pStar, rho).MarshalBinary()
	p := tpmtest.SoftwareProof(t, share, proofKey, blindR, blindP)
	blind, _ := rho.MarshalBinary()
	b.Proof = tpm.BatchProof{E: p.E, L: p.L, NonceK: p.NonceK, S: p.S, Blind: blind}
	return b
}
