package tpm

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cloudflare/circl/group"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/internal/p256"
)

// A batch answers many points with one proof. The device has the TPM
// compute each partial P_i = s·R_i (one ECDH_ZGen per point, in the
// salted session, which encrypts the point and the answer), fixes them
// all, and only then derives weights w_i from a hash of every (R_i, P_i).
// The TPM proves once, with the Chaum–Pedersen proof of dleq.go, that
// P* = Σ w_i·P_i is s·R* for R* = Σ w_i·R_i. A wrong partial anywhere
// makes P* ≠ s·R* except with probability about 2⁻¹²⁸ (docs/escrow.md,
// "Batches"), so the batch fails; [SearchBadPartials] then names the
// wrong ones with proofs of halves, down to single envelopes.
//
// The weights' transcript, SHA-256 throughout:
//
//	seed = SHA-256("custodian scoped batch v1" 0x00 ‖ n (uint32) ‖ R_1 ‖ P_1 ‖ … ‖ R_n ‖ P_n)
//	w_i  = the first 16 bytes of SHA-256(seed ‖ i (uint32, from 0)), big-endian
//
// with every point uncompressed SEC1 (65 bytes).
const batchLabel = "custodian scoped batch v1\x00"

// MaxBatch caps the points of one batch: above the 100,000 envelopes a
// warrant's list names at most, so one batch answers a key ID's release.
const MaxBatch = 1 << 17

// weightBytes is the size of a weight: 128 bits, the curve's security level.
const weightBytes = 16

// Batch is the partial decryptions of a list of points and one proof for
// all of them.
type Batch struct {
	Partials [][]byte   `json:"partials"` // s·R_i, uncompressed SEC1, in the points' order
	Proof    BatchProof `json:"proof"`
}

// BatchProof is the TPM's proof that Σ w_i·P_i = s·Σ w_i·R_i: a [Partial]
// for the blinded combined point ρ·R* without its point, which the
// verifier recomputes as ρ·P*.
type BatchProof struct {
	E      []byte `json:"e"`
	L      []byte `json:"l"`
	NonceK []byte `json:"nonce_k"`
	S      []byte `json:"s"`
	Blind  []byte `json:"blind"`
}

// ErrBadBatch is wrapped by every reason a batch does not verify.
var ErrBadBatch = errors.New("the batch of partial decryptions does not match its proof")

// PartialsBatch computes, inside the TPM, s·R for every point with the
// scoped key k, and one proof for all of them. The gate is that of
// [Partials]; so are its errors. progress, if not nil, is called after
// each partial with the number done so far.
//
// Per point the TPM runs the key's policy and one ECDH_ZGen on R_i, in
// the session salted to the gate key, which encrypts both the point it
// sends and the partial it answers: neither crosses the bus in the clear,
// and the device has nothing to blind or unblind. Per batch it runs the
// setup of Partials and one Commit and one Sign on ρ·R*, for a fresh blind
// ρ: a signature cannot be encrypted, so what crosses the bus in the clear
// is about a point no probe can relate to any R_i.
func PartialsBatch(t transport.TPM, k *ScopedKey, points [][]byte, approval *Approval, progress func(done, total int)) (*Batch, error) {
	if err := checkBatchPoints(points); err != nil {
		return nil, err
	}
	run, err := k.open(t, approval, true)
	if err != nil {
		return nil, err
	}
	defer run.close()
	partials := make([][]byte, len(points))
	for i, r := range points {
		if partials[i], err = zgenPoint(run.t, run.sess, run.gate, run.zgen, r); err != nil {
			return nil, fmt.Errorf("point %d: %w", i, err)
		}
		if progress != nil {
			progress(i+1, len(points))
		}
	}
	proof, err := run.proveBatch(points, partials)
	if err != nil {
		return nil, err
	}
	return &Batch{Partials: partials, Proof: *proof}, nil
}

// ProveBatch has the TPM prove that the given partials of points are s·R
// for the scoped key k, without computing them again: the proof verifies
// ([VerifyBatch]) exactly when they all are. It is how a custodian answers
// [SearchBadPartials] for a part of a batch it returned.
func ProveBatch(t transport.TPM, k *ScopedKey, points, partials [][]byte, approval *Approval) (*BatchProof, error) {
	if err := checkBatchPoints(points); err != nil {
		return nil, err
	}
	if len(partials) != len(points) {
		return nil, fmt.Errorf("%d partials for %d points: give one partial per point", len(partials), len(points))
	}
	run, err := k.open(t, approval, false)
	if err != nil {
		return nil, err
	}
	defer run.close()
	return run.proveBatch(points, partials)
}

func checkBatchPoints(points [][]byte) error {
	if len(points) == 0 || len(points) > MaxBatch {
		return fmt.Errorf("%d points; one batch holds 1 to %d", len(points), MaxBatch)
	}
	return checkPoints(points)
}

// proveBatch proves the combination of partials on a fresh blind of R*.
func (run *scopedRun) proveBatch(points, partials [][]byte) (*BatchProof, error) {
	rStar, pStar, err := combine(points, partials)
	if err != nil {
		return nil, err
	}
	rho, err := p256.RandomScalar()
	if err != nil {
		return nil, err
	}
	defer rho.Erase()
	blindedR, err := mulEncode(rStar, rho)
	if err != nil {
		return nil, err
	}
	blindedP, err := mulEncode(pStar, rho)
	if err != nil {
		return nil, err
	}
	p, err := prove(run.t, run.proofSess, run.gate, run.twin, blindedR, blindedP)
	if err != nil {
		return nil, err
	}
	return &BatchProof{E: p.E, L: p.L, NonceK: p.NonceK, S: p.S, Blind: rho.Bytes()}, nil
}

// mulEncode is k·p, encoded.
func mulEncode(p *p256.Point, k *p256.Scalar) ([]byte, error) {
	q, err := p256.Mul(p, k.Bytes())
	if err != nil {
		return nil, err
	}
	return p256.Encode(q)
}

// VerifyBatch checks every partial of b against its point and proofKey
// (K as the escrow file publishes it) with the batch's one proof. It
// fails, wrapping ErrBadBatch, if any partial is not s·R for its point,
// or if partials were dropped, added or moved.
func VerifyBatch(proofKey []byte, points [][]byte, b *Batch) error {
	if len(points) == 0 || len(points) > MaxBatch {
		return fmt.Errorf("%w: %d points; a batch holds 1 to %d", ErrBadBatch, len(points), MaxBatch)
	}
	if len(b.Partials) != len(points) {
		return fmt.Errorf("%w: %d partials for %d points", ErrBadBatch, len(b.Partials), len(points))
	}
	rStar, pStar, err := combine(points, b.Partials)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadBatch, err)
	}
	blind, err := p256.ParseScalar(b.Proof.Blind)
	if err != nil || blind.IsZero() {
		return fmt.Errorf("%w: the blind is not a nonzero scalar", ErrBadBatch)
	}
	r, err := p256.Encode(rStar)
	if err != nil {
		return err
	}
	point, err := mulEncode(pStar, blind)
	if err != nil {
		return err
	}
	pr := b.Proof
	p := &Partial{Point: point, E: pr.E, L: pr.L, NonceK: pr.NonceK, S: pr.S, Blind: pr.Blind}
	if _, err := VerifyPartial(proofKey, r, p); err != nil {
		return fmt.Errorf("%w: the combination of the partials fails its proof (%v); search for the wrong one", ErrBadBatch, err)
	}
	return nil
}

// SearchBadPartials names the partials that are not s·R for their points,
// for a verifier holding a batch that failed: it asks prove (the
// custodian, through [ProveBatch] on its TPM) for a proof of each half of
// a failing part, and descends into the halves that fail, down to single
// envelopes, whose one-point proofs name them. With one wrong partial
// among n it asks for about 2·log₂(n) proofs. The indices come back in
// order; none means the whole batch verifies. A wrong partial is always
// named (no proof of a part holding it verifies); a custodian that spoils
// its answers only gets right partials named as well, as unproven.
func SearchBadPartials(proofKey []byte, points, partials [][]byte, prove func(indices []int) (*BatchProof, error)) ([]int, error) {
	if len(partials) != len(points) {
		return nil, fmt.Errorf("%d partials for %d points: give one partial per point", len(partials), len(points))
	}
	all := make([]int, len(points))
	for i := range all {
		all[i] = i
	}
	var bad []int
	var search func(indices []int) error
	search = func(indices []int) error {
		proof, err := prove(indices)
		if err != nil {
			return err
		}
		part := &Batch{Partials: pick(partials, indices), Proof: *proof}
		if VerifyBatch(proofKey, pick(points, indices), part) == nil {
			return nil
		}
		if len(indices) == 1 {
			bad = append(bad, indices[0])
			return nil
		}
		half := len(indices) / 2
		if err := search(indices[:half]); err != nil {
			return err
		}
		return search(indices[half:])
	}
	if err := search(all); err != nil {
		return nil, err
	}
	slices.Sort(bad)
	return bad, nil
}

func pick(list [][]byte, indices []int) [][]byte {
	out := make([][]byte, len(indices))
	for i, j := range indices {
		out[i] = list[j]
	}
	return out
}

// BatchWeights returns the weights w_i of a batch (the transcript above),
// each a 128-bit integer as a scalar.
func BatchWeights(points, partials [][]byte) []group.Scalar {
	w := batchWeights(points, partials)
	out := make([]group.Scalar, len(w))
	for i := range w {
		out[i] = group.P256.NewScalar()
		if out[i].UnmarshalBinary(append(make([]byte, 32-weightBytes), w[i]...)) != nil {
			panic("tpm: a 128-bit weight is not a scalar")
		}
	}
	return out
}

// batchWeights is the weights, weightBytes each, big-endian.
func batchWeights(points, partials [][]byte) [][]byte {
	h := sha256.New()
	h.Write([]byte(batchLabel))
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(points))))
	for i := range points {
		h.Write(points[i])
		h.Write(partials[i])
	}
	seed := h.Sum(nil)
	out := make([][]byte, len(points))
	for i := range out {
		d := sha256.Sum256(binary.BigEndian.AppendUint32(slices.Clip(seed), uint32(i)))
		out[i] = d[:weightBytes]
	}
	return out
}

// combine decodes the points and partials and returns R* = Σ w_i·R_i and
// P* = Σ w_i·P_i, each one sum of multiples: the weights are public, and
// the sum is constant time in the partials.
func combine(points, partials [][]byte) (rStar, pStar *p256.Point, err error) {
	if len(points) != len(partials) {
		return nil, nil, fmt.Errorf("%d partials for %d points", len(partials), len(points))
	}
	rs := make([]*p256.Point, len(points))
	ps := make([]*p256.Point, len(points))
	for i := range points {
		if len(points[i]) != 65 || len(partials[i]) != 65 {
			return nil, nil, fmt.Errorf("envelope %d: a point or partial is not an uncompressed P-256 point", i)
		}
		pts, err := decodePoints([]string{"point", "partial"}, [][]byte{points[i], partials[i]})
		if err != nil {
			return nil, nil, fmt.Errorf("envelope %d: %v", i, err)
		}
		rs[i], ps[i] = pts[0], pts[1]
	}
	w := batchWeights(points, partials)
	if rStar, err = p256.SumOfMultiples(rs, w); err != nil {
		return nil, nil, err
	}
	if pStar, err = p256.SumOfMultiples(ps, w); err != nil {
		return nil, nil, err
	}
	if rStar.IsInfinity() == 1 || pStar.IsInfinity() == 1 {
		return nil, nil, errors.New("the weighted sum of the points is the identity")
	}
	return rStar, pStar, nil
}

// scopedRun is a scoped key loaded for one call: the salted, encrypting
// session, the gate, and the objects the call needs.
type scopedRun struct {
	t               transport.TPM
	sess, proofSess tpm2.Session
	gate            *openGate
	zgen, twin      *tpm2.LoadResponse
	loaded          []tpm2.TPMHandle // to flush
	closers         []func()         // the sessions
}

// open loads the twin, and the ZGen key if withZGen (importing what no
// earlier call imported), under
// the gate of approval (see Partials).
func (k *ScopedKey) open(t transport.TPM, approval *Approval, withZGen bool) (*scopedRun, error) {
	if approval != nil && k.Approver == nil {
		return nil, errors.New("an approval was given for a scoped key without an approver")
	}
	run := &scopedRun{t: t}
	err := run.openKey(k, approval, withZGen)
	if errors.Is(err, errKeptStale) {
		// Import this time, all three objects.
		k.forgetKept()
		run.close()
		run = &scopedRun{t: t}
		err = run.openKey(k, approval, withZGen)
	}
	if err != nil {
		run.close()
		return nil, err
	}
	return run, nil
}

func (run *scopedRun) openKey(k *ScopedKey, approval *Approval, withZGen bool) (err error) {
	t := run.t
	// The approval is checked first, while no scoped object is loaded: a
	// TPM without a resource manager has three transient slots.
	if run.gate, err = k.openGate(t, approval); err != nil {
		return err
	}
	// The proof session carries nothing secret (see Partials), so it also
	// loads the gate key, whose Load answers with a handle and a Name.
	proofSess, closeProof, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16)
	if err != nil {
		return fmt.Errorf("starting the proof session: %w", err)
	}
	run.proofSess = proofSess
	run.closers = append(run.closers, func() { _ = closeProof() })
	gateKey, err := loadGateKey(t, proofSess, k)
	if err != nil {
		return err
	}
	// The objects stay loaded without their parent: one transient slot
	// fewer for the rest of the call.
	defer flush(t, gateKey.ObjectHandle)
	sess, closeSession, err := gateSaltedSession(t, k, gateKey)
	if err != nil {
		return err
	}
	run.sess = sess
	run.closers = append(run.closers, func() { _ = closeSession() })
	if withZGen {
		if run.zgen, err = run.load(gateKey, &k.zgen); err != nil {
			return err
		}
	}
	if run.twin, err = run.load(gateKey, &k.twin); err != nil {
		return err
	}
	return nil
}

// gateSaltedSession starts the call's encrypting session: a policy
// session salted to the loaded gate key, with the public area the scoped
// key holds (never read back), that encrypts the first parameter of each
// command and of each response (ECDH_ZGen's point and its partial). Its
// salt opens only with the gate key's private part, which the TPM holds
// only by importing the bundle's wrapping under its import key, and the
// ZGen key loads only under that same object: whatever can read the
// session could read the share itself. The gate key is P-256, so the
// salt costs the TPM one ECDH, where the RSA import key's costs an RSA
// decryption. Were its handle swapped on the bus for a key the swapper
// holds, the TPM's session key would differ from the device's, and the
// first command the session authorizes (the ZGen key's import or load,
// before any ECDH_ZGen) fails its HMAC.
func gateSaltedSession(t transport.TPM, k *ScopedKey, gateKey *tpm2.LoadResponse) (tpm2.Session, func() error, error) {
	sess, closeSession, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(gateKey.ObjectHandle, k.gateKey.public),
		tpm2.AESEncryption(128, tpm2.EncryptInOut))
	if err != nil {
		return nil, nil, fmt.Errorf("starting a session salted to the gate key: %w", err)
	}
	return sess, closeSession, nil
}

// load loads w under the gate key, through the gate.
func (run *scopedRun) load(gateKey *tpm2.LoadResponse, w *wrapped) (*tpm2.LoadResponse, error) {
	loaded, err := run.gate.loadUnderGateKey(run.t, run.sess, gateKey, w)
	if err != nil {
		return nil, err
	}
	run.loaded = append(run.loaded, loaded.ObjectHandle)
	return loaded, nil
}

// close flushes what open loaded and closes its sessions.
func (run *scopedRun) close() {
	for _, h := range run.loaded {
		flush(run.t, h)
	}
	run.loaded = nil
	for i := len(run.closers) - 1; i >= 0; i-- {
		run.closers[i]()
	}
	run.closers = nil
}
