package tests

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/witness/witnesstest"
)

// BenchmarkWitnessedRelease measures what the witness round trip adds to
// a release on loopback: the same appliance releases key IDs whose escrow
// files name no witness, one (quorum 1) and two (quorum 2) real
// litewitness processes, in turn, each op one release of each. Reported:
// press-to-package time of each, the time waiting for the witnesses, and
// the ratios of the witnessed releases to the unwitnessed one, all from
// the same run.
//
//	go test -run '^$' -bench WitnessedRelease -benchtime 10x ./tests
func BenchmarkWitnessedRelease(b *testing.B) {
	r, ws := witnessedRigB(b)
	defer r.stop()
	keyIDs := []string{"2027-00", "2027-01", "2026-11"} // 0, 1 and 2 witnesses
	provisionLocal(b, r.a, r.tpm, keyIDs[0])
	provisionLocal(b, r.a, r.tpm, keyIDs[1], escrow.WithWitnesses(refs(ws[:1]), 1))
	var total, waited [3]float64
	b.ResetTimer()
	for i := range b.N {
		for k, keyID := range keyIDs {
			p7s := r.court.sign(b, fmt.Sprintf("W-bench-%d-%d", i, k), r.agency.Public(), []string{"court-a", "court-z"}, []string{keyID}, time.Now().UTC())
			status, st, eb := r.c.submit(b, p7s)
			if status != http.StatusAccepted {
				b.Fatalf("submit: %d %+v", status, eb)
			}
			time.Sleep(20 * time.Millisecond)
			r.press()
			if st = r.c.wait(b, st.ID); st.State != release.StateReleased {
				b.Fatalf("release of %s: %+v", keyID, st)
			}
			total[k] += st.Timings.TotalMS
			waited[k] += st.Timings.WitnessMS
		}
	}
	n := float64(b.N)
	for k, label := range []string{"0w", "1w", "2w"} {
		b.ReportMetric(total[k]/n, "press-to-package-"+label+"-ms/op")
		b.ReportMetric(waited[k]/n, "witness-wait-"+label+"-ms/op")
	}
	b.ReportMetric(total[1]/total[0], "x-1w-vs-0w")
	b.ReportMetric(total[2]/total[0], "x-2w-vs-0w")
}

// witnessedRigB is witnessedRig for a benchmark: 2026-11 names two
// witnesses with quorum 2.
func witnessedRigB(b *testing.B) (*rig, []*witnesstest.Witness) {
	var ws []*witnesstest.Witness
	r := newRigWith(b, "court-a", func(r *rig) []escrow.Option {
		for _, name := range []string{"witness.test/one", "witness.test/two"} {
			ws = append(ws, witnesstest.Start(b, name, "custodian/court-a", r.a.VerifierKey))
		}
		return []escrow.Option{escrow.WithWitnesses(refs(ws), 2)}
	})
	r.court.install(b, r.a, time.Now().UTC())
	return r, ws
}
