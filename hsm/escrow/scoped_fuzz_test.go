package escrow_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"testing"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// FuzzOpenScopedPartials fuzzes what is sealed inside a version 1 scoped
// release (a proof per partial). court-a releases a valid batch for the
// envelope; court-b's package holds the fuzzed bytes. Without court-b's share nothing can make its
// partial verify, so OpenScoped must always refuse with
// ErrNotEnoughShares and name court-b, and only court-b, as bad.
func FuzzOpenScopedPartials(f *testing.F) {
	s := newScopedFuzzSetup(f)
	a, b := s.shares[0], s.shares[1]

	// The harness reaches the combine step: court-b's honest partial, sealed
	// as the fuzzed bytes are, opens the envelope with court-a's.
	honest := s.partialsJSON(f, escrow.EnvelopePartial{Enc: s.enc, Partial: *b.prove(f, s.enc)})
	if _, pt, err := escrow.OpenScoped(s.id, s.pub, []*escrow.Release{s.courtA, s.courtB(f, 1, honest)}, s.envelope); err != nil || string(pt) != scopedFuzzMessage {
		f.Fatalf("two honest partials: %q, %v", pt, err)
	}

	// Seeds: court-a's valid partial replayed as court-b's; (s_b+1)·R proved
	// by court-b's TPM, and proved with s_b+1 under court-b's proof key;
	// well-formed random points; court-b's partial of another envelope; and
	// JSON that is not a list of partials.
	bPlusOne := new(big.Int).Add(b.s, big.NewInt(1))
	wrongPoint := scalarMulModel(f, s.enc, bPlusOne)
	forger := &scopedModelShare{s: bPlusOne}
	otherEnc := randomModelPoint(f)
	random := escrow.EnvelopePartial{Enc: s.enc, Partial: tpm.Partial{
		Point: randomModelPoint(f), E: randomModelPoint(f), L: randomModelPoint(f),
		NonceK: bytes.Repeat([]byte{0x5a}, 32), S: bytes.Repeat([]byte{0x11}, 32),
	}}
	replayed := escrow.EnvelopePartial{Enc: s.enc, Partial: *a.prove(f, s.enc)}
	lying := escrow.EnvelopePartial{Enc: s.enc, Partial: *b.proveStatement(f, b.proofKey, s.enc, wrongPoint)}
	forged := escrow.EnvelopePartial{Enc: s.enc, Partial: *forger.proveStatement(f, b.proofKey, s.enc, wrongPoint)}
	for _, ps := range [][]escrow.EnvelopePartial{
		{replayed},
		{lying},
		{forged},
		{random},
		{{Enc: otherEnc, Partial: *b.prove(f, otherEnc)}},
		{lying, replayed},
		{},
	} {
		f.Add(s.partialsJSON(f, ps...))
	}
	for _, seed := range []string{"", "null", "{}", "[{}]", `[{"enc":null}]`, "[", "\x00"} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		s.refusesCourtB(t, 1, data)
	})
}

// FuzzOpenScopedBatch fuzzes what is sealed inside a version 2 scoped
// release (partials and one proof). As for FuzzOpenScopedPartials, nothing
// but court-b's share makes court-b's batch verify, so OpenScoped must
// refuse with ErrNotEnoughShares and name court-b alone.
func FuzzOpenScopedBatch(f *testing.F) {
	s := newScopedFuzzSetup(f)
	a, b := s.shares[0], s.shares[1]
	honest := s.batchJSON(f, [][]byte{s.enc}, b.batch(f, [][]byte{s.enc}, nil))
	if _, pt, err := escrow.OpenScoped(s.id, s.pub, []*escrow.Release{s.courtA, s.courtB(f, 2, honest)}, s.envelope); err != nil || string(pt) != scopedFuzzMessage {
		f.Fatalf("two honest batches: %q, %v", pt, err)
	}
	// Seeds: court-a's batch replayed as court-b's; court-b's batch with
	// the wrong partial R (proved by its share); court-b's batch of the
	// envelope and another with the two partials swapped; and JSON that is
	// not a batch.
	otherEnc := randomModelPoint(f)
	both := [][]byte{s.enc, otherEnc}
	swapped := b.batch(f, both, nil)
	swapped.Partials[0], swapped.Partials[1] = swapped.Partials[1], swapped.Partials[0]
	for _, seed := range [][]byte{
		s.batchJSON(f, [][]byte{s.enc}, a.batch(f, [][]byte{s.enc}, nil)),
		s.batchJSON(f, [][]byte{s.enc}, b.batch(f, [][]byte{s.enc}, func(_ int, _ []byte) []byte { return s.enc })),
		s.batchJSON(f, both, swapped),
		[]byte(`{"partials":[],"proof":{}}`), []byte(`{"partials":null}`), []byte("[]"), []byte("{"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s.refusesCourtB(t, 2, data)
	})
}

// refusesCourtB checks that court-b's package of the given version
// holding data does not open the envelope and names court-b alone.
func (s *scopedFuzzSetup) refusesCourtB(t *testing.T, version int, data []byte) {
	env, pt, err := escrow.OpenScoped(s.id, s.pub, []*escrow.Release{s.courtA, s.courtB(t, version, data)}, s.envelope)
	if err == nil || env != nil || pt != nil {
		t.Fatalf("opened without court-b's share: %q, %v", pt, err)
	}
	if !errors.Is(err, escrow.ErrNotEnoughShares) {
		t.Fatalf("got %v, want ErrNotEnoughShares", err)
	}
	var bad *escrow.BadShareError
	if !errors.As(err, &bad) {
		t.Fatalf("no custodian named in %v", err)
	}
	if names := slices.Sorted(maps.Keys(bad.Custodians)); !slices.Equal(names, []string{"court-b"}) {
		t.Fatalf("named %v, want [court-b]: %v", names, err)
	}
}

const scopedFuzzMessage = "intercepted message"

// scopedFuzzSetup is a 2-of-3 scoped key ID made without TPMs: its shares
// split in software, its escrow file with each share's proof key, an
// envelope, the agency's identity and court-a's release of the envelope.
type scopedFuzzSetup struct {
	id       *recipient.Identity
	pub      *escrow.Public
	shares   []*scopedModelShare // by index - 1
	envelope []byte
	enc      []byte // the envelope's R
	digest   []byte // the warrant's
	courtA   *escrow.Release
}

func newScopedFuzzSetup(tb testing.TB) *scopedFuzzSetup {
	tb.Helper()
	g := group.P256
	ss := secretsharing.New(rand.Reader, 1, g.RandomNonZeroScalar(rand.Reader))
	pub := &escrow.Public{Version: escrow.Version, KeyID: "2026-11", Mode: escrow.ModeScoped, Threshold: 2,
		PCRs: tpm.PCRValues{8: bytes.Repeat([]byte{1}, 32)}, SecurityVersion: 1}
	for _, c := range ss.CommitSecret() {
		b, err := c.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		pub.Commitments = append(pub.Commitments, b)
	}
	pub.PublicKey = pub.Commitments[0]
	s := &scopedFuzzSetup{digest: bytes.Repeat([]byte{0xd1}, sha256.Size)}
	for i, share := range ss.Share(3) {
		v, err := share.Value.MarshalBinary()
		if err != nil {
			tb.Fatal(err)
		}
		proofKey, err := tpm.ProofKey(v)
		if err != nil {
			tb.Fatal(err)
		}
		id := fmt.Sprintf("court-%c", 'a'+i)
		ekName := sha256.Sum256([]byte(id))
		pub.Custodians = append(pub.Custodians, escrow.Custodian{ID: id, Index: i + 1, EKName: ekName[:], ImportKeyName: ekName[:], ProofKey: proofKey})
		s.shares = append(s.shares, &scopedModelShare{s: new(big.Int).SetBytes(v), proofKey: proofKey})
	}
	data, err := pub.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	if s.pub, err = escrow.ParsePublic(data); err != nil {
		tb.Fatal(err)
	}
	// x25519 keeps each run fast; the KEM plays no part in what is fuzzed.
	if s.id, err = recipient.Generate("x25519"); err != nil {
		tb.Fatal(err)
	}
	if s.envelope, err = escrow.Seal(s.pub, "alice@example.org", []byte(scopedFuzzMessage)); err != nil {
		tb.Fatal(err)
	}
	env, err := escrow.ParseEnvelope(s.envelope)
	if err != nil {
		tb.Fatal(err)
	}
	s.enc = env.Enc
	points := [][]byte{s.enc}
	a, err := escrow.NewPartialsBatch(points, s.shares[0].batch(tb, points, nil))
	if err != nil {
		tb.Fatal(err)
	}
	r, err := escrow.SealPartials(s.id.Public(), s.digest, "court-a", s.pub.KeyID, 1, a)
	if err != nil {
		tb.Fatal(err)
	}
	if data, err = r.Marshal(); err != nil {
		tb.Fatal(err)
	}
	if s.courtA, err = escrow.ParseRelease(data); err != nil {
		tb.Fatal(err)
	}
	return s
}

// courtB is court-b's release for the warrant, its partials being data
// sealed as a package of version seals them: version 2 a batch
// (SealPartials), version 1 a list of partials.
func (s *scopedFuzzSetup) courtB(tb testing.TB, version int, data []byte) *escrow.Release {
	tb.Helper()
	info := escrow.BatchInfo(s.digest, "court-b", s.pub.KeyID, 2)
	if version == 1 {
		info = escrow.PartialsInfo(s.digest, "court-b", s.pub.KeyID, 2)
	}
	sealed, err := s.id.Public().Seal(info, data)
	if err != nil {
		tb.Fatal(err)
	}
	return &escrow.Release{
		Version: version, Mode: escrow.ModeScoped, KeyID: s.pub.KeyID, CustodianID: "court-b", Index: 2,
		WarrantDigest: s.digest, Recipient: s.id.Public().String(), SealedPartials: sealed,
	}
}

func (s *scopedFuzzSetup) partialsJSON(tb testing.TB, ps ...escrow.EnvelopePartial) []byte {
	tb.Helper()
	data, err := json.Marshal(ps)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func (s *scopedFuzzSetup) batchJSON(tb testing.TB, points [][]byte, b *tpm.Batch) []byte {
	tb.Helper()
	pb, err := escrow.NewPartialsBatch(points, b)
	if err != nil {
		tb.Fatal(err)
	}
	data, err := json.Marshal(pb)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

var scopedModelOrder = elliptic.P256().Params().N

// scopedModelShare is a software model of what a custodian's TPM computes
// with its scoped key (tpm.Partials; the proof is described in the tpm
// package's dleq.go): P = s·R, E = r·R, L = r·B, and
// S = r + c·s mod n with c = SHA-256(nonceK ‖ d).
type scopedModelShare struct {
	s        *big.Int
	proofKey []byte
}

// prove returns the partial s·R and its proof.
func (m *scopedModelShare) prove(tb testing.TB, enc []byte) *tpm.Partial {
	tb.Helper()
	p := m.proveStatement(tb, m.proofKey, enc, scalarMulModel(tb, enc, m.s))
	if _, err := tpm.VerifyPartial(m.proofKey, enc, p); err != nil {
		tb.Fatalf("the model's partial does not verify: %v", err)
	}
	return p
}

// batch returns the model's batch of partials of points with its proof;
// lie may replace partial i before the proof.
func (m *scopedModelShare) batch(tb testing.TB, points [][]byte, lie func(i int, p []byte) []byte) *tpm.Batch {
	tb.Helper()
	share := new(big.Int).Mod(m.s, scopedModelOrder).FillBytes(make([]byte, 32))
	return tpmtest.SoftwareBatch(tb, share, points, lie)
}

// proveStatement computes with s a proof over another statement (proof key
// and partial point), as a TPM does when its host hands it that digest.
func (m *scopedModelShare) proveStatement(tb testing.TB, proofKey, enc, point []byte) *tpm.Partial {
	tb.Helper()
	share := new(big.Int).Mod(m.s, scopedModelOrder).FillBytes(make([]byte, 32))
	p := tpmtest.SoftwareProof(tb, share, proofKey, enc, point)
	return &p
}

func scalarMulModel(tb testing.TB, point []byte, k *big.Int) []byte {
	tb.Helper()
	e := group.P256.NewElement()
	if err := e.UnmarshalBinary(point); err != nil {
		tb.Fatal(err)
	}
	// SetBigInt reduces its argument in place: give it a copy.
	out, err := group.P256.NewElement().Mul(e, group.P256.NewScalar().SetBigInt(new(big.Int).Set(k))).MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// randomModelScalar is 32 random bytes, in 1..n-1 with a nonzero first byte.
func randomModelScalar(tb testing.TB) []byte {
	tb.Helper()
	for {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			tb.Fatal(err)
		}
		if b[0] != 0 && new(big.Int).SetBytes(b).Cmp(scopedModelOrder) < 0 {
			return b
		}
	}
}

func randomModelPoint(tb testing.TB) []byte {
	tb.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k.PublicKey().Bytes()
}
