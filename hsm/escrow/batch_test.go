package escrow

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow/escrowtest"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// batchFixture is a t-of-n scoped key ID made without TPMs, count
// envelopes sealed to it, and the agency that opens them.
type batchFixture struct {
	pub       *Public
	shares    [][]byte // by index - 1
	agency    *recipient.Identity
	envelopes [][]byte
	messages  [][]byte
	encs      [][]byte
}

// newBatchFixture seals count envelopes, version 3 but those v2 picks
// (none when absent), which are version 2.
func newBatchFixture(tb testing.TB, t, n, count int, v2 ...func(i int) bool) *batchFixture {
	tb.Helper()
	pub, shares := benchKey(tb, ModeScoped, t, n)
	// x25519 keeps the fixture fast; the KEM plays no part in opening.
	agency, err := recipient.Generate("x25519")
	if err != nil {
		tb.Fatal(err)
	}
	f := &batchFixture{pub: pub, shares: shares, agency: agency,
		envelopes: make([][]byte, count), messages: make([][]byte, count), encs: make([][]byte, count)}
	parallelFor(tb, count, func(i int) error {
		f.messages[i] = fmt.Appendf(nil, "message %d: %x", i, rand.Uint64())
		prove := proveSealV3
		if len(v2) > 0 && v2[0](i) {
			prove = proveSeal
		}
		data, err := seal(pub, fmt.Sprintf("target-%d", i%7), f.messages[i], prove)
		if err != nil {
			return err
		}
		env, err := ParseEnvelope(data)
		f.envelopes[i] = data
		if env != nil {
			f.encs[i] = env.Enc
		}
		return err
	})
	return f
}

// release is custodian index's package with a partial of every envelope
// and one proof, computed in software as its TPM would (tpmtest); lie,
// when not nil, may replace the partial of envelope i before the proof.
func (f *batchFixture) release(tb testing.TB, index int, lie func(i int, partial []byte) []byte) *Release {
	tb.Helper()
	batch := tpmtest.SoftwareBatch(tb, f.shares[index-1], f.encs, lie)
	sealed, err := NewPartialsBatch(f.encs, batch)
	if err != nil {
		tb.Fatal(err)
	}
	c := f.pub.Custodians[index-1]
	r, err := SealPartials(f.agency.Public(), fixtureDigest[:], c.ID, f.pub.KeyID, c.Index, sealed)
	if err != nil {
		tb.Fatal(err)
	}
	return reparse(tb, r)
}

// releaseV1 is custodian index's package as version 1 made it: a proof
// for each partial; lie, when not nil, may replace envelope i's.
func (f *batchFixture) releaseV1(tb testing.TB, index int, lie func(i int, p *tpm.Partial)) *Release {
	tb.Helper()
	partials := make([]EnvelopePartial, len(f.encs))
	parallelFor(tb, len(f.encs), func(i int) error {
		partials[i] = EnvelopePartial{Enc: f.encs[i], Partial: tpmtest.SoftwarePartial(tb, f.shares[index-1], f.encs[i])}
		if lie != nil {
			lie(i, &partials[i].Partial)
		}
		return nil
	})
	data, err := json.Marshal(partials)
	if err != nil {
		tb.Fatal(err)
	}
	c := f.pub.Custodians[index-1]
	sealed, err := f.agency.Public().Seal(PartialsInfo(fixtureDigest[:], c.ID, f.pub.KeyID, c.Index), data)
	if err != nil {
		tb.Fatal(err)
	}
	return reparse(tb, &Release{Version: releaseVersionPerEnvelope, Mode: ModeScoped, KeyID: f.pub.KeyID,
		CustodianID: c.ID, Index: c.Index, WarrantDigest: fixtureDigest[:], Recipient: f.agency.Public().String(),
		SealedPartials: sealed})
}

var fixtureDigest = sha256.Sum256([]byte("warrant"))

// reparse returns r as ParseRelease reads its encoding.
func reparse(tb testing.TB, r *Release) *Release {
	tb.Helper()
	data, err := r.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	if r, err = ParseRelease(data); err != nil {
		tb.Fatal(err)
	}
	return r
}

func (f *batchFixture) opener(tb testing.TB, releases ...*Release) *ScopedOpener {
	tb.Helper()
	o, err := NewScopedOpener(f.agency, f.pub, releases)
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// openAll opens the envelopes with o and returns each one's outcome and
// plaintext, checking that outcomes arrive in order.
func (f *batchFixture) openAll(tb testing.TB, o *ScopedOpener, envelopes [][]byte, workers int) ([]Outcome, [][]byte) {
	tb.Helper()
	plaintexts := make([][]byte, len(envelopes))
	var outcomes []Outcome
	OpenBatch(o, Batch{
		Count: len(envelopes),
		Read:  func(i int) ([]byte, error) { return envelopes[i], nil },
		Keep: func(i int, _ *Envelope, pt []byte) error {
			plaintexts[i] = bytes.Clone(pt)
			return nil
		},
		Done: func(out Outcome) {
			if out.Index != len(outcomes) {
				tb.Errorf("outcome of envelope %d after %d outcomes", out.Index, len(outcomes))
			}
			outcomes = append(outcomes, out)
		},
	}, workers)
	if len(outcomes) != len(envelopes) {
		tb.Fatalf("%d outcomes for %d envelopes", len(outcomes), len(envelopes))
	}
	return outcomes, plaintexts
}

// parallelFor runs fn for 0..n-1 on every CPU.
func parallelFor(tb testing.TB, n int, fn func(i int) error) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make([]error, runtime.GOMAXPROCS(0))
	for w := range errs {
		wg.Go(func() {
			for i := w; i < n; i += len(errs) {
				if err := fn(i); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		tb.Fatal(err)
	}
}

// TestOpenBatchOf10000EnvelopesFromThreeReleases: 10,000 envelopes of a
// 3-of-4 scoped key ID open from the releases of custodians 1, 2 and 4
// into exactly the sealed messages, with one set of Lagrange coefficients;
// version 2 envelopes among them open too, and the one forged envelope is
// named for its seal proof while the others open.
func TestOpenBatchOf10000EnvelopesFromThreeReleases(t *testing.T) {
	// Every tenth envelope is version 2; one envelope is a requester's,
	// relabelled from an honest one whose partials the releases hold.
	f := newBatchFixture(t, 3, 4, 10_000, func(i int) bool { return i%10 == 0 })
	o := f.opener(t, f.release(t, 1, nil), f.release(t, 2, nil), f.release(t, 4, nil))
	const forgedAt = 6787
	envelopes := slices.Clone(f.envelopes)
	envelopes[forgedAt] = escrowtest.Forgeries(t, f.envelopes[forgedAt], f.envelopes[forgedAt+1])[2].Envelope
	outcomes, plaintexts := f.openAll(t, o, envelopes, 0)
	for i, out := range outcomes {
		if i == forgedAt {
			if !errors.Is(out.Err, ErrUnproven) || plaintexts[i] != nil {
				t.Fatalf("the forged envelope %d: %v, %q; want refused for its seal proof", i, out.Err, plaintexts[i])
			}
			continue
		}
		if out.Err != nil || out.Bad != nil || !bytes.Equal(plaintexts[i], f.messages[i]) {
			t.Fatalf("envelope %d: %v, %v, %q; want %q", i, out.Err, out.Bad, plaintexts[i], f.messages[i])
		}
		if want := fmt.Sprintf("target-%d", i%7); out.Envelope.Target != want {
			t.Fatalf("envelope %d: target %q, want %q", i, out.Envelope.Target, want)
		}
	}
	if len(o.lagrange) != 1 {
		t.Fatalf("%d sets of Lagrange coefficients for one set of custodians", len(o.lagrange))
	}
}

// TestOpenBatchNamesTheCustodianOfAWrongBatch: court-1's software
// changes one partial among 40 before its TPM proves the batch. The batch
// fails its proof, so none of court-1's partials is used and court-1 is
// named for every envelope (and as a package error): with exactly t
// releases nothing opens; with one release more everything opens from
// the others.
func TestOpenBatchNamesTheCustodianOfAWrongBatch(t *testing.T) {
	f := newBatchFixture(t, 2, 3, 40)
	const victim = 17
	liar := f.release(t, 2, func(i int, p []byte) []byte {
		if i == victim {
			return f.encs[i] // R for s·R: a point, but the wrong one
		}
		return p
	})
	for _, releases := range [][]*Release{
		{f.release(t, 1, nil), liar},
		{liar, f.release(t, 1, nil), f.release(t, 3, nil)},
	} {
		o := f.opener(t, releases...)
		if pe := o.PackageErrors(); pe == nil || !strings.Contains(pe.Custodians["court-1"], "none of the package's 40 partials is used") || len(pe.Custodians) != 1 {
			t.Fatalf("%d releases: package errors %v, want court-1's batch named", len(releases), pe)
		}
		outcomes, plaintexts := f.openAll(t, o, f.envelopes, 3)
		for i, out := range outcomes {
			if out.Bad == nil || len(out.Bad.Custodians) != 1 || !strings.Contains(out.Bad.Custodians["court-1"], tpm.ErrBadBatch.Error()) {
				t.Fatalf("%d releases: envelope %d: bad %v, want court-1 named", len(releases), i, out.Bad)
			}
			opened := out.Err == nil && bytes.Equal(plaintexts[i], f.messages[i])
			if opened != (len(releases) > f.pub.Threshold) {
				t.Fatalf("%d releases: envelope %d opened %v: %v", len(releases), i, opened, out.Err)
			}
			if !opened && !errors.Is(out.Err, ErrNotEnoughShares) {
				t.Fatalf("%d releases: envelope %d: %v, want ErrNotEnoughShares", len(releases), i, out.Err)
			}
		}
	}
}

// TestOpenBatchReadsVersion1Packages: packages made before batches, a
// proof per partial, still open, beside a version 2 package; a wrong
// partial in one names its custodian for that envelope alone.
func TestOpenBatchReadsVersion1Packages(t *testing.T) {
	f := newBatchFixture(t, 2, 3, 20)
	const victim = 7
	liar := f.releaseV1(t, 2, func(i int, p *tpm.Partial) {
		if i == victim {
			*p = tpmtest.SoftwareProof(t, f.shares[1], f.pub.Custodians[1].ProofKey, f.encs[i], p.E)
		}
	})
	o := f.opener(t, f.releaseV1(t, 1, nil), liar, f.release(t, 3, nil))
	if pe := o.PackageErrors(); pe != nil {
		t.Fatalf("package errors %v", pe)
	}
	outcomes, plaintexts := f.openAll(t, o, f.envelopes, 2)
	for i, out := range outcomes {
		if out.Err != nil || !bytes.Equal(plaintexts[i], f.messages[i]) {
			t.Fatalf("envelope %d: %v", i, out.Err)
		}
		named := out.Bad != nil && strings.HasPrefix(out.Bad.Custodians["court-1"], tpm.ErrBadProof.Error())
		if named != (i == victim) || (out.Bad != nil && len(out.Bad.Custodians) != 1) {
			t.Fatalf("envelope %d: bad %v", i, out.Bad)
		}
	}
}

// TestOpenBatchNamesForgedEnvelopesAndOpensTheRest: envelopes a requester
// made out of another envelope's key (escrowtest.Forgeries), mixed into a
// batch, are refused for their seal proofs before any partial is looked
// at; the honest envelopes around them open.
func TestOpenBatchNamesForgedEnvelopesAndOpensTheRest(t *testing.T) {
	f := newBatchFixture(t, 2, 2, 12)
	o := f.opener(t, f.release(t, 1, nil), f.release(t, 2, nil))
	var batch [][]byte
	forged := map[int]string{}
	for i, env := range f.envelopes {
		batch = append(batch, env)
		if i%4 == 0 {
			for _, fg := range escrowtest.Forgeries(t, env, f.envelopes[i+1]) {
				forged[len(batch)] = fg.Name
				batch = append(batch, fg.Envelope)
			}
		}
	}
	outcomes, plaintexts := f.openAll(t, o, batch, 4)
	honest := 0
	for i, out := range outcomes {
		if name, ok := forged[i]; ok {
			if !errors.Is(out.Err, ErrUnproven) || plaintexts[i] != nil || out.Bad != nil {
				t.Errorf("forgery %q at %d: %v, %v, %q; want refused for its seal proof", name, i, out.Err, out.Bad, plaintexts[i])
			}
			continue
		}
		if out.Err != nil || !bytes.Equal(plaintexts[i], f.messages[honest]) {
			t.Errorf("honest envelope %d at %d: %v", honest, i, out.Err)
		}
		honest++
	}
	if honest != len(f.envelopes) || len(forged) != 3*7 { // version 3: 7 forgeries each
		t.Fatalf("%d honest, %d forged", honest, len(forged))
	}
}

// TestOpenBatchOrderIsDeterministic: whatever order the workers finish in
// (reads sleep at random), outcomes come in input order, and two runs with
// different worker counts give the same outcomes.
func TestOpenBatchOrderIsDeterministic(t *testing.T) {
	f := newBatchFixture(t, 2, 3, 60)
	o := f.opener(t, f.release(t, 3, nil), f.release(t, 1, nil))
	batch := append([][]byte{[]byte("not an envelope")}, f.envelopes...)
	run := func(workers int) []string {
		var got []string
		OpenBatch(o, Batch{
			Count: len(batch),
			Read: func(i int) ([]byte, error) {
				time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
				return batch[i], nil
			},
			Keep: func(int, *Envelope, []byte) error { return nil },
			Done: func(out Outcome) {
				s := fmt.Sprint(out.Index, " ", out.Err)
				if out.Envelope != nil {
					s += " " + out.Envelope.Target
				}
				got = append(got, s)
			},
		}, workers)
		return got
	}
	one, many := run(1), run(9)
	if len(one) != len(batch) || fmt.Sprint(one) != fmt.Sprint(many) {
		t.Fatalf("1 worker:\n%v\n9 workers:\n%v", one, many)
	}
	for i, s := range one {
		if want := fmt.Sprint(i, " "); s[:len(want)] != want {
			t.Fatalf("outcome %d is %q", i, s)
		}
	}
	if want := fmt.Sprint(1, " <nil> target-0"); one[1] != want || one[0] == "0 <nil>" {
		t.Fatalf("outcomes start %q, %q", one[0], one[1])
	}
}

// TestOpenBatchKeepFailureIsTheEnvelopesOutcome: a plaintext that cannot
// be stored is that envelope's failure, not the batch's.
func TestOpenBatchKeepFailureIsTheEnvelopesOutcome(t *testing.T) {
	f := newBatchFixture(t, 2, 2, 5)
	o := f.opener(t, f.release(t, 1, nil), f.release(t, 2, nil))
	full := errors.New("disk full")
	var errs []error
	OpenBatch(o, Batch{
		Count: len(f.envelopes),
		Read:  func(i int) ([]byte, error) { return f.envelopes[i], nil },
		Keep: func(i int, _ *Envelope, _ []byte) error {
			if i == 2 {
				return full
			}
			return nil
		},
		Done: func(out Outcome) { errs = append(errs, out.Err) },
	}, 2)
	if fmt.Sprint(errs) != fmt.Sprint([]error{nil, nil, full, nil, nil}) {
		t.Fatalf("outcomes %v", errs)
	}
}

// TestOpenBatchChecksAnEnvelopeThatChangedAlone: an envelope file that
// changes between the proof pass and its opening is not taken as proven:
// a requester-made one put in its place is refused for its seal proof,
// and another honest envelope opens after its own proof is checked.
func TestOpenBatchChecksAnEnvelopeThatChangedAlone(t *testing.T) {
	f := newBatchFixture(t, 2, 2, 4)
	o := f.opener(t, f.release(t, 1, nil), f.release(t, 2, nil))
	forged := escrowtest.Forgeries(t, f.envelopes[0], f.envelopes[1])[2].Envelope // R relabelled
	var mu sync.Mutex
	reads := map[int]int{}
	plaintexts := make([][]byte, 4)
	var outcomes []Outcome
	OpenBatch(o, Batch{
		Count: 4,
		Read: func(i int) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			reads[i]++
			switch {
			case reads[i] == 1:
				return f.envelopes[i], nil
			case i == 0:
				return forged, nil
			case i == 2:
				return f.envelopes[3], nil
			}
			return f.envelopes[i], nil
		},
		Keep: func(i int, _ *Envelope, pt []byte) error { plaintexts[i] = bytes.Clone(pt); return nil },
		Done: func(out Outcome) { outcomes = append(outcomes, out) },
	}, 2)
	if reads[0] != 2 || !errors.Is(outcomes[0].Err, ErrUnproven) || plaintexts[0] != nil {
		t.Fatalf("a forgery swapped in after the proof pass: %v, %q", outcomes[0].Err, plaintexts[0])
	}
	if outcomes[2].Err != nil || !bytes.Equal(plaintexts[2], f.messages[3]) {
		t.Fatalf("another honest envelope swapped in: %v, %q", outcomes[2].Err, plaintexts[2])
	}
	for _, i := range []int{1, 3} {
		if outcomes[i].Err != nil || !bytes.Equal(plaintexts[i], f.messages[i]) {
			t.Fatalf("envelope %d: %v", i, outcomes[i].Err)
		}
	}
}
