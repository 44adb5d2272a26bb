package tests

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
	"github.com/google/go-tpm/tpm2"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// BenchmarkPressToPackage measures a release from the press to the stored
// package on swtpm (the human excluded), split into the daemon's steps, as
// a ratio to a bare tpm.Unseal of the same share (x-unseal), and as a
// ratio to the composite floor any share-mode release pays, measured after
// each release in the same run (x-floor): the warrant's verification, one
// fsync of 1 KB, one bare TPM2_NV_Increment, the unseal and the HPKE seal.
//
//	go test -run '^$' -bench PressToPackage -benchtime 10x ./tests
func BenchmarkPressToPackage(b *testing.B) {
	r := newRig(b)
	r.court.install(b, r.a, time.Now().UTC())
	defer r.stop()
	floor := releaseFloor(b, r)

	// Baseline: unseal alone, through the same connection.
	bundle, err := r.a.Bundle("2026-11")
	if err != nil {
		b.Fatal(err)
	}
	blob, _ := tpm.ParseBlob(bundle.Blob)
	const baseRuns = 5
	start := time.Now()
	for range baseRuns {
		if _, err := tpm.Unseal(r.tpm, blob); err != nil {
			b.Fatal(err)
		}
	}
	base := ms(time.Since(start)) / baseRuns

	var sum release.Timings
	var floorMS float64
	b.ResetTimer()
	for i := range b.N {
		p7s := r.court.sign(b, fmt.Sprintf("W-bench-%d", i), r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, time.Now().UTC())
		status, st, eb := r.c.submit(b, p7s)
		if status != http.StatusAccepted {
			b.Fatalf("submit: %d %+v", status, eb)
		}
		r.press()
		st = r.c.wait(b, st.ID)
		if st.State != release.StateReleased {
			b.Fatalf("release: %+v", st)
		}
		floorMS += floor(p7s, blob)
		tm := st.Timings
		sum.VerifyMS += tm.VerifyMS
		sum.RecheckMS += tm.RecheckMS
		sum.WitnessMS += tm.WitnessMS
		sum.LedgerMS += tm.LedgerMS
		sum.TPMMS += tm.TPMMS
		sum.HPKEMS += tm.HPKEMS
		sum.ProofMS += tm.ProofMS
		sum.StoreMS += tm.StoreMS
		sum.TotalMS += tm.TotalMS
		sum.TPMCommands += tm.TPMCommands
	}
	n := float64(b.N)
	b.ReportMetric(sum.VerifyMS/n, "verify-ms/op")
	b.ReportMetric(sum.RecheckMS/n, "recheck-ms/op")
	b.ReportMetric(sum.LedgerMS/n, "ledger-ms/op")
	b.ReportMetric(sum.TPMMS/n, "tpm-ms/op")
	b.ReportMetric(sum.HPKEMS/n, "hpke-ms/op")
	b.ReportMetric(sum.ProofMS/n, "proof-ms/op")
	b.ReportMetric(sum.StoreMS/n, "store-ms/op")
	// What no stage from the press on records (the moments between
	// them; the verification before the summary is not part of the
	// whole): the stages and this sum to the whole.
	staged := sum.WitnessMS + sum.RecheckMS + sum.LedgerMS + sum.TPMMS + sum.HPKEMS + sum.ProofMS + sum.StoreMS
	b.ReportMetric((sum.TotalMS-staged)/n, "unstaged-ms/op")
	b.ReportMetric(sum.TotalMS/n, "press-to-package-ms/op")
	b.ReportMetric(float64(sum.TPMCommands)/n, "tpm-cmds/op")
	b.ReportMetric(base, "baseline-unseal-ms")
	b.ReportMetric(sum.TotalMS/n/base, "x-unseal")
	b.ReportMetric(floorMS/n, "floor-ms/op")
	b.ReportMetric(sum.TotalMS/floorMS, "x-floor")
}

// releaseFloor returns one run of the composite floor of a share-mode
// release, in milliseconds: Verify of the warrant against the appliance's
// trust store, a 1 KB file written and fsynced, one TPM2_NV_Increment of a
// counter of its own (tpm.Counter.Bump, as the ledger increments),
// tpm.Unseal of the share and the HPKE seal of a 32-byte share to the
// agency.
func releaseFloor(b *testing.B, r *rig) func(p7s []byte, blob *tpm.Blob) float64 {
	store, err := trust.Open(filepath.Join(r.a.Dir, "trust"))
	if err != nil {
		b.Fatal(err)
	}
	v := &warrant.Verifier{Trust: store, CustodianID: r.a.ID, HeldKeyIDs: []string{"2026-11"}}
	counter := tpm.Counter{Index: tpm.DefaultCounterIndex + 0x10}
	if _, err := counter.Create(r.tpm); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "fsync")
	page := make([]byte, 1024)
	pk := r.agency.Public()
	return func(p7s []byte, blob *tpm.Blob) float64 {
		start := time.Now()
		if _, err := v.Verify(p7s); err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(path)
		if err == nil {
			_, err = f.Write(page)
		}
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
		if err := counter.Bump(r.tpm); err != nil {
			b.Fatal(err)
		}
		share, err := tpm.Unseal(r.tpm, blob)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := pk.Seal([]byte("floor"), share); err != nil {
			b.Fatal(err)
		}
		return ms(time.Since(start))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkEnvelopeListRelease measures what a scoped release costs the
// device per envelope for warrants of 1, 100 and 10,000 envelopes named by
// a list, on swtpm, one request per iteration: device-ns/envelope (the
// verification before the summary, the press's re-verification and the
// release to the stored package; the human excluded), of it tpm-ns (the
// partials' TPM calls) and verify-ns (before the summary: the warrant, the
// list, every seal proof), and per request the TPM commands, NV writes
// (TPM2_NV_Increment) and ledger entries.
//
//	go test -run '^$' -bench EnvelopeListRelease -benchtime 1x ./tests
func BenchmarkEnvelopeListRelease(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		b.Run(fmt.Sprintf("envelopes=%d", n), func(b *testing.B) {
			r := newRig(b)
			defer r.stop()
			r.court.install(b, r.a, time.Now().UTC())
			pub := provisionLocal(b, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
			_, refs := sealEnvelopes(b, pub, "alice@example.org", n)
			var deviceMS, tpmMS, verifyMS float64
			var cmds, nv, entries int
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				p7s, list := listWarrant(b, r, fmt.Sprintf("W-bench-list-%d", i), []string{"court-a", "court-z"}, []string{"2026-12"}, []string{"alice@example.org"}, refs)
				size := r.a.Ledger.Size()
				r.rec.Reset()
				b.StartTimer()
				status, st, eb := r.c.submitWithList(b, p7s, list)
				if status != http.StatusAccepted {
					b.Fatalf("submit: %d %+v", status, eb)
				}
				r.press()
				st = r.c.wait(b, st.ID)
				b.StopTimer()
				if st.State != release.StateReleased {
					b.Fatalf("release: %+v", st)
				}
				deviceMS += st.Timings.VerifyMS + st.Timings.TotalMS
				tpmMS += st.Timings.TPMMS
				verifyMS += st.Timings.VerifyMS
				cmds += r.rec.Count()
				nv += countCommands(r.rec, tpm2.TPMCCNVIncrement)
				entries += int(r.a.Ledger.Size() - size)
				b.StartTimer()
			}
			per := float64(b.N)
			b.ReportMetric(deviceMS*1e6/per/float64(n), "device-ns/envelope")
			b.ReportMetric(tpmMS*1e6/per/float64(n), "tpm-ns/envelope")
			b.ReportMetric(verifyMS*1e6/per/float64(n), "verify-ns/envelope")
			b.ReportMetric(float64(cmds)/per, "tpm-cmds/request")
			b.ReportMetric(float64(cmds)/per/float64(n), "tpm-cmds/envelope")
			b.ReportMetric(float64(nv)/per, "nv-writes/request")
			b.ReportMetric(float64(entries)/per, "ledger-entries/request")
		})
	}
}

// BenchmarkStoryTwoOfThree is the release a user feels, on swtpm: a 2-of-3
// share-mode key ID (court-a, court-b on appliances with their daemons,
// court-c not taking part); one warrant naming all three, submitted to
// court-a and then court-b over TLS, pressed at each, each package
// fetched; the agency recovers the key from the two packages and opens an
// envelope sealed before. story-ms is the sum of what each step takes
// (the submit with its verification and summary, the daemon's press to
// stored package, the package's fetch, the agency's recovery and opening),
// without the time the button is held. floor-ms is the sum of its steps'
// floors, measured after each story: per custodian, one verification for
// the summary and releaseFloor (verification, 1 KB fsync,
// TPM2_NV_Increment, unseal, HPKE seal); at the agency, the HPKE opens of
// the two packages, circl's Verify of each share and Recover, and the
// envelope's opening. x-floor is story-ms over floor-ms.
//
//	CUSTODIAN_REQUIRE_TOOLS=1 go test -run '^$' -bench StoryTwoOfThree -benchtime 10x -count 3 ./tests
func BenchmarkStoryTwoOfThree(b *testing.B) {
	now := time.Now().UTC()
	rigs := []*rig{newIdleRig(b, "court-a"), newIdleRig(b, "court-b")}
	court, agency := rigs[0].court, rigs[0].agency
	pcrs, err := tpm.ReadPCRs(rigs[0].tpm, 8, 9, 11, 12)
	if err != nil {
		b.Fatal(err)
	}
	members := []escrow.Member{{ID: "court-c", EK: tpmtest.RandomEK(b), ImportKey: tpmtest.RandomImportKey(b)}}
	for _, r := range rigs {
		members = append(members, escrow.Member{ID: r.a.ID, EK: r.a.EK, ImportKey: r.a.ImportKey})
	}
	pub, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, members, escrow.WithMode(escrow.ModeShare))
	if err != nil {
		b.Fatal(err)
	}
	var floors []func([]byte, *tpm.Blob) float64
	var blobs []*tpm.Blob
	for i, r := range rigs {
		data, err := bundles[i+1].Marshal()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.a.Provision(r.tpm, data, time.Now()); err != nil {
			b.Fatal(err)
		}
		court.install(b, r.a, now)
		r.agency = agency
		r.start(b)
		defer r.stop()
		floors = append(floors, releaseFloor(b, r))
		blob, err := tpm.ParseBlob(bundles[i+1].Blob)
		if err != nil {
			b.Fatal(err)
		}
		blobs = append(blobs, blob)
	}
	message := []byte("the intercepted conversation")
	envelope, err := escrow.Seal(pub, "alice@example.org", message)
	if err != nil {
		b.Fatal(err)
	}
	verifiers := make([]*warrant.Verifier, len(rigs))
	for i, r := range rigs {
		store, err := trust.Open(filepath.Join(r.a.Dir, "trust"))
		if err != nil {
			b.Fatal(err)
		}
		verifiers[i] = &warrant.Verifier{Trust: store, CustodianID: r.a.ID, HeldKeyIDs: []string{"2026-11"}}
	}

	var story, floor, submitMS, releaseMS, fetchMS, agencyMS float64
	for i := 0; b.Loop(); i++ {
		p7s := court.sign(b, fmt.Sprintf("W-story-%d", i), agency.Public(), []string{"court-a", "court-b", "court-c"}, []string{"2026-11"}, time.Now().UTC())
		var releases []*escrow.Release
		for _, r := range rigs {
			start := time.Now()
			status, st, eb := r.c.submit(b, p7s)
			if status != http.StatusAccepted {
				b.Fatalf("submit to %s: %d %+v", r.a.ID, status, eb)
			}
			submitMS += ms(time.Since(start))
			r.press()
			if st = r.c.wait(b, st.ID); st.State != release.StateReleased {
				b.Fatalf("release at %s: %+v", r.a.ID, st)
			}
			releaseMS += st.Timings.TotalMS
			start = time.Now()
			code, data := r.c.get(b, "/v1/requests/"+st.ID+"/packages/2026-11")
			if code != http.StatusOK {
				b.Fatalf("package from %s: %d %s", r.a.ID, code, data)
			}
			pkg, err := escrow.ParseRelease(data)
			if err != nil {
				b.Fatal(err)
			}
			fetchMS += ms(time.Since(start))
			releases = append(releases, pkg)
		}
		start := time.Now()
		key, err := escrow.Recover(agency, pub, releases)
		if err != nil {
			b.Fatal(err)
		}
		if _, opened, err := escrow.Open(key, envelope); err != nil || !bytes.Equal(opened, message) {
			b.Fatalf("opening the envelope: %q, %v", opened, err)
		}
		agencyMS += ms(time.Since(start))

		for j := range rigs {
			start := time.Now()
			if _, err := verifiers[j].Verify(p7s); err != nil {
				b.Fatal(err)
			}
			floor += ms(time.Since(start)) + floors[j](p7s, blobs[j])
		}
		floor += agencyFloor(b, agency, pub, releases, key, envelope)
	}
	story = submitMS + releaseMS + fetchMS + agencyMS
	n := float64(b.N)
	b.ReportMetric(submitMS/n, "submit-ms/op")
	b.ReportMetric(releaseMS/n, "press-to-package-ms/op")
	b.ReportMetric(fetchMS/n, "fetch-ms/op")
	b.ReportMetric(agencyMS/n, "agency-ms/op")
	b.ReportMetric(story/n, "story-ms/op")
	b.ReportMetric(floor/n, "floor-ms/op")
	b.ReportMetric(story/floor, "x-floor")
	b.ReportMetric(0, "ns/op")
}

// agencyFloor returns one run of the agency's floor, in milliseconds: the
// HPKE open of each package, circl's Verify of each share against the
// commitments and its Recover, and the envelope's opening with key.
func agencyFloor(b *testing.B, agency *recipient.Identity, pub *escrow.Public, releases []*escrow.Release, key *escrow.Key, envelope []byte) float64 {
	commit := make(secretsharing.SecretCommitment, len(pub.Commitments))
	for i, c := range pub.Commitments {
		commit[i] = group.P256.NewElement()
		if err := commit[i].UnmarshalBinary(c); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	var shares []secretsharing.Share
	for _, r := range releases {
		value, err := agency.Open(escrow.ShareInfo(r.WarrantDigest, r.CustodianID, r.KeyID, r.Index), r.SealedShare)
		if err != nil {
			b.Fatal(err)
		}
		s := secretsharing.Share{ID: group.P256.NewScalar().SetUint64(uint64(r.Index)), Value: group.P256.NewScalar()}
		if err := s.Value.UnmarshalBinary(value); err != nil {
			b.Fatal(err)
		}
		if !secretsharing.Verify(uint(pub.Threshold-1), s, commit) {
			b.Fatal("a share does not verify")
		}
		shares = append(shares, s)
	}
	if _, err := secretsharing.Recover(uint(pub.Threshold-1), shares); err != nil {
		b.Fatal(err)
	}
	if _, _, err := escrow.Open(key, envelope); err != nil {
		b.Fatal(err)
	}
	return ms(time.Since(start))
}
