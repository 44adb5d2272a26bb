package tpm_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/cloudflare/circl/group"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

func randomPoints(t testing.TB, n int) [][]byte {
	t.Helper()
	points := make([][]byte, n)
	for i := range points {
		points[i] = randomPoint(t)
	}
	return points
}

// requireShareTimes checks every partial against s·R computed in software.
func requireShareTimes(t *testing.T, share []byte, points, partials [][]byte) {
	t.Helper()
	for i, r := range points {
		if !bytes.Equal(partials[i][1:33], mulPoint(t, share, r)) {
			t.Fatalf("partial %d is not s·R", i)
		}
	}
}

func TestBatchOf1And100PointsVerifies(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s, key, proofKey := scopedShare(t, ek, pcrs)
		for _, n := range []int{1, 100} {
			points := randomPoints(t, n)
			var calls []int
			b, err := tpm.PartialsBatch(conn, key, points, nil, func(done, total int) {
				if total != n {
					t.Errorf("progress: total %d, want %d", total, n)
				}
				calls = append(calls, done)
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(calls) != n || calls[0] != 1 || calls[n-1] != n || !slices.IsSorted(calls) {
				t.Errorf("progress was called with %v, want 1 to %d in order", calls, n)
			}
			requireShareTimes(t, s, points, b.Partials)
			if err := tpm.VerifyBatch(proofKey, points, b); err != nil {
				t.Fatalf("%d points: %v", n, err)
			}
			_, _, otherKey := scopedShare(t, ek, pcrs)
			if err := tpm.VerifyBatch(otherKey, points, b); !errors.Is(err, tpm.ErrBadBatch) {
				t.Errorf("%d points against another custodian's proof key: got %v, want ErrBadBatch", n, err)
			}
		}
	})
}

// TestBatchOf10000PointsVerifiesAndOneWrongPartialIsNamed: a batch of
// 10,000 verifies; a custodian's software that changes one partial after
// its TPM returned it makes the batch fail, and the search through the
// TPM's proofs of halves names exactly that envelope, with about
// 2·log₂(10,000) proofs.
func TestBatchOf10000PointsVerifiesAndOneWrongPartialIsNamed(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 ECDH_ZGen commands: not in -short")
	}
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s, key, proofKey := scopedShare(t, ek, pcrs)
		points := randomPoints(t, 10000)
		b, err := tpm.PartialsBatch(conn, key, points, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tpm.VerifyBatch(proofKey, points, b); err != nil {
			t.Fatal(err)
		}
		requireShareTimes(t, s, points[:50], b.Partials[:50])

		const wrong = 7321
		b.Partials[wrong] = mulBytes(t, b.Partials[wrong], 2)
		if err := tpm.VerifyBatch(proofKey, points, b); !errors.Is(err, tpm.ErrBadBatch) {
			t.Fatalf("one wrong partial among 10,000: got %v, want ErrBadBatch", err)
		}
		proofs := 0
		bad, err := tpm.SearchBadPartials(proofKey, points, b.Partials, func(indices []int) (*tpm.BatchProof, error) {
			proofs++
			return tpm.ProveBatch(conn, key, pick(points, indices), pick(b.Partials, indices), nil)
		})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(bad, []int{wrong}) {
			t.Fatalf("the search named %v, want [%d]", bad, wrong)
		}
		if proofs > 2*14+1 {
			t.Errorf("the search asked for %d proofs, want at most %d", proofs, 2*14+1)
		}
		t.Logf("the search took %d TPM proofs", proofs)
	})
}

func pick(list [][]byte, indices []int) [][]byte {
	out := make([][]byte, len(indices))
	for i, j := range indices {
		out[i] = list[j]
	}
	return out
}

// mulBytes is k·P for a small k.
func mulBytes(t testing.TB, p []byte, k uint64) []byte {
	t.Helper()
	e := group.P256.NewElement()
	if err := e.UnmarshalBinary(p); err != nil {
		t.Fatal(err)
	}
	out, err := group.P256.NewElement().Mul(e, group.P256.NewScalar().SetUint64(k)).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestBatchRefusesReorderedDroppedOrDuplicatedPartials: the proof covers
// the partials in the points' order and their number.
func TestBatchRefusesReorderedDroppedOrDuplicatedPartials(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		_, key, proofKey := scopedShare(t, ek, pcrs)
		points := randomPoints(t, 8)
		b, err := tpm.PartialsBatch(conn, key, points, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tpm.VerifyBatch(proofKey, points, b); err != nil {
			t.Fatal(err)
		}
		swap := func(l [][]byte, i, j int) [][]byte {
			l = slices.Clone(l)
			l[i], l[j] = l[j], l[i]
			return l
		}
		dup := slices.Clone(b.Partials)
		dup[4] = dup[3]
		cases := map[string]struct{ points, partials [][]byte }{
			"two partials swapped":                   {points, swap(b.Partials, 2, 5)},
			"two envelopes swapped with partials":    {swap(points, 2, 5), swap(b.Partials, 2, 5)},
			"the last partial dropped":               {points, b.Partials[:7]},
			"the last envelope and partial dropped":  {points[:7], b.Partials[:7]},
			"the first envelope and partial dropped": {points[1:], b.Partials[1:]},
			"a partial duplicated over another":      {points, dup},
			"an envelope and partial repeated":       {append(slices.Clone(points), points[0]), append(slices.Clone(b.Partials), b.Partials[0])},
		}
		for name, c := range cases {
			err := tpm.VerifyBatch(proofKey, c.points, &tpm.Batch{Partials: c.partials, Proof: b.Proof})
			if !errors.Is(err, tpm.ErrBadBatch) {
				t.Errorf("%s: got %v, want ErrBadBatch", name, err)
			}
		}
	})
}

// TestInvariantBatchKeepsShareAndPartialsOffTheBus: over a whole batch,
// no command or response holds the share, an envelope's point, a partial,
// or the combined point and partial the proof is about (the point goes to
// ECDH_ZGen unblinded, encrypted by the session); every ECDH_ZGen asks for
// response encryption.
func TestInvariantBatchKeepsShareAndPartialsOffTheBus(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s, key, proofKey := scopedShare(t, ek, pcrs)
		points := randomPoints(t, 100)
		bus := &tpmtest.Recorder{TPM: conn}
		b, err := tpm.PartialsBatch(bus, key, points, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tpm.VerifyBatch(proofKey, points, b); err != nil {
			t.Fatal(err)
		}
		if bus.Seen(s) {
			t.Fatal("the share scalar crossed the TPM bus")
		}
		for i := range points {
			for _, coordinate := range [][]byte{points[i][1:33], points[i][33:], b.Partials[i][1:33], b.Partials[i][33:]} {
				if bus.Seen(coordinate) {
					t.Fatalf("envelope %d: its point or partial crossed the bus", i)
				}
			}
		}
		rStar, pStar := combined(t, points, b.Partials)
		if bus.Seen(rStar[1:33]) || bus.Seen(pStar[1:33]) {
			t.Fatal("the combined point or partial crossed the bus: the proof's values would give the combination away")
		}
		if n, clear := bus.EncryptedResponses(tpm2.TPMCCECDHZGen, 1); n != 100 || clear != 0 {
			t.Errorf("saw %d ECDH_ZGen commands, %d without response encryption; want 100 and 0", n, clear)
		}
		if n, clear := bus.EncryptedCommands(tpm2.TPMCCECDHZGen, 1); n != 100 || clear != 0 {
			t.Errorf("saw %d ECDH_ZGen commands, %d sending their point in the clear; want 100 and 0", n, clear)
		}
		requireSaltedToGateKey(t, bus, key, tpm2.TPMCCECDHZGen, 1)
	})
}

// combined is R* and P*, computed from the weights in software.
func combined(t *testing.T, points, partials [][]byte) (rStar, pStar []byte) {
	t.Helper()
	return combinedWith(t, tpm.BatchWeights(points, partials), points, partials)
}

func combinedWith(t *testing.T, w []group.Scalar, points, partials [][]byte) (rStar, pStar []byte) {
	t.Helper()
	R, P := group.P256.Identity(), group.P256.Identity()
	for i := range points {
		r, p := group.P256.NewElement(), group.P256.NewElement()
		if r.UnmarshalBinary(points[i]) != nil || p.UnmarshalBinary(partials[i]) != nil {
			t.Fatal("not a point")
		}
		R.Add(R, r.Mul(r, w[i]))
		P.Add(P, p.Mul(p, w[i]))
	}
	rStar, _ = R.MarshalBinary()
	pStar, _ = P.MarshalBinary()
	return rStar, pStar
}

// TestBatchWeightsFollowTheTranscript pins the weights to the transcript
// docs/escrow.md describes, computed here from its description.
func TestBatchWeightsFollowTheTranscript(t *testing.T) {
	points, partials := randomPoints(t, 3), randomPoints(t, 3)
	seed := sha256Of([]byte("custodian scoped batch v1\x00"), binary.BigEndian.AppendUint32(nil, 3),
		points[0], partials[0], points[1], partials[1], points[2], partials[2])
	for i, w := range tpm.BatchWeights(points, partials) {
		d := sha256Of(seed, binary.BigEndian.AppendUint32(nil, uint32(i)))
		want := make([]byte, 32)
		copy(want[16:], d[:16])
		got, err := w.MarshalBinary()
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("weight %d is %x, want %x", i, got, want)
		}
	}
	moved := tpm.BatchWeights([][]byte{points[1], points[0], points[2]}, [][]byte{partials[1], partials[0], partials[2]})
	if moved[2].IsEqual(tpm.BatchWeights(points, partials)[2]) {
		t.Error("reordering the envelopes left the weights as they were")
	}
}

// TestBatchWorksOnlyUnderItsPolicy: the batch goes through the key's gate
// like every partial: refused after a PCR extend, refused below the floor,
// working under an approval of the new image.
func TestBatchWorksOnlyUnderItsPolicy(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		approver, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		s, _, proofKey := scopedShare(t, ek, pcrs)
		key, err := tpm.SealScoped(ek, pcrs, testVersion, s, &approver.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		points := randomPoints(t, 3)
		measure(t, conn, 9, "an unapproved binary")
		if _, err := tpm.PartialsBatch(conn, key, points, nil, nil); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("after a PCR extend: got %v, want ErrPCRMismatch", err)
		}
		now, err := tpm.ReadPCRs(conn, 8, 9)
		if err != nil {
			t.Fatal(err)
		}
		b, err := tpm.PartialsBatch(conn, key, points, approve(t, approver, now), nil)
		if err != nil {
			t.Fatalf("approved image: %v", err)
		}
		if err := tpm.VerifyBatch(proofKey, points, b); err != nil {
			t.Fatal(err)
		}
		if _, err := tpm.RaiseFloor(conn, testVersion+1); err != nil {
			t.Fatal(err)
		}
		_, err = tpm.PartialsBatch(conn, key, points, approve(t, approver, now), nil)
		if !errors.Is(err, tpm.ErrDowngrade) {
			t.Fatalf("approval below the floor: got %v, want a downgrade refusal", err)
		}
		tpmtest.AssertNoLeaks(t, conn)
	})
}

// TestBatchTPMCommandsPerEnvelope pins what the TPM runs: per envelope
// PolicyCommandCode and ECDH_ZGen (the gate was passed at load); per batch one Commit and one Sign; no NV write at all; and the
// whole of a one-envelope call after the first, which only loads what the
// first imported (docs/escrow.md, "Scoped mode"). A change that adds a
// command per envelope or to the setup fails here.
func TestBatchTPMCommandsPerEnvelope(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s, key, _ := scopedShare(t, ek, pcrs)
		approver, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		seal := func(f func(*tpm.ImportKey, tpm.PCRValues, uint64, []byte, *ecdsa.PublicKey) (*tpm.ScopedKey, error), a *ecdsa.PublicKey) *tpm.ScopedKey {
			k, err := f(ek, pcrs, testVersion, s, a)
			if err != nil {
				t.Fatal(err)
			}
			return k
		}
		approval := approve(t, approver, pcrs)
		cases := []struct {
			name        string
			key         *tpm.ScopedKey
			approval    *tpm.Approval
			perEnvelope int
			oneEnvelope int // after the first call, which imports
		}{
			// PolicyCommandCode, ECDH_ZGen
			{"own PCRs", key, nil, 2, 28},
			{"approval", seal(tpm.SealScoped, &approver.PublicKey), approval, 2, 33},
		}
		for _, c := range cases {
			counts := map[int]map[tpm2.TPMCC]int{}
			total := map[int]int{}
			// The first call imports the key's objects; later ones only load them.
			if _, err := tpm.PartialsBatch(conn, c.key, randomPoints(t, 1), c.approval, nil); err != nil {
				t.Fatal(err)
			}
			for _, n := range []int{1, 101} {
				bus := &tpmtest.Recorder{TPM: conn}
				if _, err := tpm.PartialsBatch(bus, c.key, randomPoints(t, n), c.approval, nil); err != nil {
					t.Fatal(err)
				}
				counts[n], total[n] = commandCounts(bus), bus.Count()
			}
			if got := (total[101] - total[1]) / 100; got != c.perEnvelope || (total[101]-total[1])%100 != 0 {
				t.Errorf("%s: %d commands per envelope (%d for 1, %d for 101), want %d", c.name, got, total[1], total[101], c.perEnvelope)
			}
			for _, cc := range []tpm2.TPMCC{tpm2.TPMCCCommit, tpm2.TPMCCSign} {
				if counts[101][cc] != 1 {
					t.Errorf("%s: %d of command %#x for 101 envelopes, want 1", c.name, counts[101][cc], cc)
				}
			}
			if total[1] != c.oneEnvelope {
				t.Errorf("%s: %d commands for one envelope, want %d", c.name, total[1], c.oneEnvelope)
			}
			if counts[101][tpm2.TPMCCImport] != 0 {
				t.Errorf("%s: %d TPM2_Import in a call after the first, want none", c.name, counts[101][tpm2.TPMCCImport])
			}
			if counts[101][tpm2.TPMCCECDHZGen] != 101 {
				t.Errorf("%s: %d ECDH_ZGen for 101 envelopes", c.name, counts[101][tpm2.TPMCCECDHZGen])
			}
			if w := nvWrites(counts[101]); w != 0 {
				t.Errorf("%s: %d NV writes in a batch, want none", c.name, w)
			}
			t.Logf("%s: %d commands for 1 envelope, %d for 101", c.name, total[1], total[101])
		}
	})
}

func commandCounts(bus *tpmtest.Recorder) map[tpm2.TPMCC]int {
	out := map[tpm2.TPMCC]int{}
	for _, e := range bus.Exchanges() {
		out[tpm2.TPMCC(binary.BigEndian.Uint32(e.Command[6:10]))]++
	}
	return out
}

// nvWrites counts the commands that change NV memory.
func nvWrites(counts map[tpm2.TPMCC]int) int {
	n := 0
	for _, cc := range []tpm2.TPMCC{tpm2.TPMCCNVWrite, tpm2.TPMCCNVIncrement, tpm2.TPMCCNVExtend, tpm2.TPMCCNVSetBits,
		tpm2.TPMCCNVDefineSpace, tpm2.TPMCCNVUndefineSpace, tpm2.TPMCCEvictControl, tpm2.TPMCCNVWriteLock} {
		n += counts[cc]
	}
	return n
}

func sha256Of(parts ...[]byte) []byte {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	d := sha256.Sum256(all)
	return d[:]
}

// TestInvariantScopedObjectDiesWithItsBoot: the gate of a version 3 key is
// passed when its objects load, so a loaded object must not outlive the
// boot it was loaded in. Its saved context loads in the same boot, but
// not after a reboot, even one after TPM2_Shutdown(STATE), which keeps
// the contexts of other objects (a sealed blob's object shows it): the
// objects are stClear. Loading them afresh needs the gate again.
func TestInvariantScopedObjectDiesWithItsBoot(t *testing.T) {
	tpmtest.RequireSwtpm(t)
	sw := tpmtest.StartSwtpm(t)
	conn := sw.Open(t)
	ek, pcrs := bootedDevice(t, conn)
	s, key, _ := scopedShare(t, ek, pcrs)
	blob := sealAndReparse(t, ek, pcrs, s)
	for _, c := range []struct {
		name     string
		load     func() (*tpm2.LoadResponse, error)
		survives bool
	}{
		{"sealed blob's object", func() (*tpm2.LoadResponse, error) {
			pub, dup, seed := tpm.WrappedOf(blob)
			return tpm.LoadUnderImportKey(conn, ek, pub, dup, seed)
		}, true},
		{"ZGen key", func() (*tpm2.LoadResponse, error) { return tpm.LoadScopedObject(conn, key, false) }, false},
		{"twin", func() (*tpm2.LoadResponse, error) { return tpm.LoadScopedObject(conn, key, true) }, false},
	} {
		obj, err := c.load()
		if err != nil {
			t.Fatal(err)
		}
		saved, err := tpm2.ContextSave{SaveHandle: obj.ObjectHandle}.Execute(conn)
		if err != nil {
			t.Fatal(err)
		}
		flushHandle(conn, obj.ObjectHandle)
		again, err := tpm2.ContextLoad{Context: saved.Context}.Execute(conn)
		if err != nil {
			t.Fatalf("%s: the saved context does not load in the same boot: %v", c.name, err)
		}
		flushHandle(conn, again.LoadedHandle)
		sw.Restart(t, conn)
		again, err = tpm2.ContextLoad{Context: saved.Context}.Execute(conn)
		if err == nil {
			flushHandle(conn, again.LoadedHandle)
		}
		if survives := err == nil; survives != c.survives {
			t.Fatalf("%s: its context loads after a reboot: %v, want %v (%v)", c.name, survives, c.survives, err)
		}
		if _, err := tpm.PartialsBatch(conn, key, randomPoints(t, 1), nil, nil); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("%s: after the reboot, before measuring: got %v, want ErrPCRMismatch", c.name, err)
		}
		bootedState(t, conn)
	}
	tpmtest.AssertNoLeaks(t, conn)
}

// TestBatchCompensatingErrorsFail: a custodian that knew the weights
// before fixing its partials could make two errors that cancel in the
// combination, Δ₂ = −(w₁/w₂)·Δ₁. The weights hash the partials, so
// changing them changes the weights and the batch fails.
func TestBatchCompensatingErrorsFail(t *testing.T) {
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	share := priv.Bytes()
	proofKey, err := tpm.ProofKey(share)
	if err != nil {
		t.Fatal(err)
	}
	points := randomPoints(t, 4)
	b := softwareBatch(t, share, proofKey, points)
	if err := tpm.VerifyBatch(proofKey, points, b); err != nil {
		t.Fatal(err)
	}
	g := group.P256
	w := tpm.BatchWeights(points, b.Partials)
	delta1 := g.NewElement().MulGen(g.RandomNonZeroScalar(rand.Reader))
	ratio := g.NewScalar().Mul(w[1], g.NewScalar().Inv(w[2]))
	delta2 := g.NewElement().Mul(delta1, g.NewScalar().Neg(ratio))
	forged := slices.Clone(b.Partials)
	forged[1], forged[2] = addPoint(t, forged[1], delta1), addPoint(t, forged[2], delta2)
	rStar, pStar := combinedWith(t, w, points, forged)
	if want, _ := combinedWith(t, w, points, b.Partials); !bytes.Equal(rStar, want) {
		t.Fatal("the forgery changed R*")
	}
	if _, honest := combinedWith(t, w, points, b.Partials); !bytes.Equal(pStar, honest) {
		t.Fatal("the errors do not cancel under the old weights: the forgery is wrong")
	}
	if err := tpm.VerifyBatch(proofKey, points, &tpm.Batch{Partials: forged, Proof: b.Proof}); !errors.Is(err, tpm.ErrBadBatch) {
		t.Fatalf("two errors that cancel under weights known in advance: got %v, want ErrBadBatch", err)
	}
}

func addPoint(t *testing.T, p []byte, d group.Element) []byte {
	t.Helper()
	e := group.P256.NewElement()
	if err := e.UnmarshalBinary(p); err != nil {
		t.Fatal(err)
	}
	out, err := e.Add(e, d).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestInvariantScopedKeptObjectsStillPassTheGate: a call after the first
// loads the private parts the first imported, without TPM2_Import, and
// still passes the gate at each load: PolicyPCR and the floor run for both
// objects, and a PCR change stops the call. A kept private part that no
// longer loads is forgotten and the objects are imported again.
func TestInvariantScopedKeptObjectsStillPassTheGate(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		s, key, _ := scopedShare(t, ek, pcrs)
		imports := []int{3, 0, 3} // first call, kept, spoiled
		for i, want := range imports {
			if i == 2 {
				tpm.SpoilKept()
			}
			bus := &tpmtest.Recorder{TPM: conn}
			points := randomPoints(t, 1)
			b, err := tpm.PartialsBatch(bus, key, points, nil, nil)
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			requireShareTimes(t, s, points, b.Partials)
			counts := commandCounts(bus)
			if counts[tpm2.TPMCCImport] != want {
				t.Errorf("call %d: %d TPM2_Import, want %d", i, counts[tpm2.TPMCCImport], want)
			}
			if i == 1 && (counts[tpm2.TPMCCPolicyPCR] != 2 || counts[tpm2.TPMCCPolicyNV] != 2) {
				t.Errorf("kept objects loaded with %d PolicyPCR and %d PolicyNV, want 2 each (the gate at each load)",
					counts[tpm2.TPMCCPolicyPCR], counts[tpm2.TPMCCPolicyNV])
			}
		}
		measure(t, conn, 9, "an unapproved binary")
		if _, err := tpm.PartialsBatch(conn, key, randomPoints(t, 1), nil, nil); !errors.Is(err, tpm.ErrPCRMismatch) {
			t.Fatalf("kept objects after a PCR extend: got %v, want ErrPCRMismatch", err)
		}
		tpmtest.AssertNoLeaks(t, conn)
	})
}

// TestBatchStopsAtTheFirstFailedZGen: when the TPM fails an ECDH_ZGen in
// the middle of a batch (here the 70th, in the second chunk of blinds),
// the call returns that point's error, sends no ECDH_ZGen after it,
// reports progress in order and only for partials before it, and leaves
// nothing loaded.
func TestBatchStopsAtTheFirstFailedZGen(t *testing.T) {
	tpmtest.Run(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		ek, pcrs := bootedDevice(t, conn)
		_, key, _ := scopedShare(t, ek, pcrs)
		const failAt = 69
		bus := &tpmtest.Recorder{TPM: conn}
		failing := &zgenFailer{TPM: bus, failAt: failAt}
		var calls []int
		_, err := tpm.PartialsBatch(failing, key, randomPoints(t, 200), nil, func(done, _ int) { calls = append(calls, done) })
		if err == nil || !strings.Contains(err.Error(), "point 69:") {
			t.Fatalf("got %v, want the failure of point %d", err, failAt)
		}
		if n, _ := bus.EncryptedResponses(tpm2.TPMCCECDHZGen, 1); n != failAt {
			t.Errorf("%d ECDH_ZGen commands reached the TPM, want the %d before the failed one: the batch went on after the failure", n, failAt)
		}
		for i, done := range calls {
			if done != i+1 || done > failAt {
				t.Fatalf("progress was called with %v, want 1, 2, … up to at most %d", calls, failAt)
			}
		}
	})
}

// zgenFailer answers the ECDH_ZGen of index failAt (from 0) with
// TPM_RC_FAILURE without sending it.
type zgenFailer struct {
	TPM    transport.TPM
	failAt int
	zgens  int
}

func (z *zgenFailer) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 10 && tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10])) == tpm2.TPMCCECDHZGen {
		z.zgens++
		if z.zgens-1 == z.failAt {
			rsp := make([]byte, 10)
			binary.BigEndian.PutUint16(rsp, uint16(tpm2.TPMSTNoSessions))
			binary.BigEndian.PutUint32(rsp[2:], 10)
			binary.BigEndian.PutUint32(rsp[6:], uint32(tpm2.TPMRCFailure))
			return rsp, nil
		}
	}
	return z.TPM.Send(cmd)
}
