package tests

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

// BenchmarkPressToPackage measures a release from the press to the stored
// package on swtpm (the human excluded), split into the daemon's steps, and
// as a ratio to a bare tpm.Unseal of the same share measured in the same
// run: the floor any release pays.
//
//	go test -run '^$' -bench PressToPackage -benchtime 10x ./tests
func BenchmarkPressToPackage(b *testing.B) {
	r := newRig(b)
	r.court.install(b, r.a, time.Now().UTC())
	defer r.stop()

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
		tm := st.Timings
		sum.VerifyMS += tm.VerifyMS
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
	b.ReportMetric(sum.LedgerMS/n, "ledger-ms/op")
	b.ReportMetric(sum.TPMMS/n, "tpm-ms/op")
	b.ReportMetric(sum.HPKEMS/n, "hpke-ms/op")
	b.ReportMetric(sum.ProofMS/n, "proof-ms/op")
	b.ReportMetric(sum.StoreMS/n, "store-ms/op")
	b.ReportMetric(sum.TotalMS/n, "press-to-package-ms/op")
	b.ReportMetric(float64(sum.TPMCommands)/n, "tpm-cmds/op")
	b.ReportMetric(base, "baseline-unseal-ms")
	b.ReportMetric(sum.TotalMS/n/base, "x-unseal")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
