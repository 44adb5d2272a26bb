package report

import (
	"io"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// benchEntries is 10^6 encoded entries, as a ledger's bundles hold them.
func benchEntries(b *testing.B) [][]byte {
	b.Helper()
	var raw [][]byte
	for _, e := range sample(1, 1_000_000) {
		if e.Kind != ledger.KindUnverified {
			e.Commitment = make([]byte, 32)
		}
		data, err := e.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		raw = append(raw, data)
	}
	return raw
}

// BenchmarkReport10e6: parsing 10^6 entries (baseline, what any reader
// of the ledger does), and parsing them, adding them up and rendering
// the page, JSON and CSV (the report). Compare the two per-op times:
// the report's own work is the difference.
func BenchmarkReport10e6(b *testing.B) {
	raw := benchEntries(b)
	b.Run("parse", func(b *testing.B) {
		for b.Loop() {
			for _, data := range raw {
				if _, err := ledger.ParseEntry(data); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("report", func(b *testing.B) {
		for b.Loop() {
			bd := NewBuilder()
			for _, data := range raw {
				e, err := ledger.ParseEntry(data)
				if err != nil {
					b.Fatal(err)
				}
				bd.Add("court-a", e)
			}
			r := bd.Report(time.Now())
			for _, w := range []func(io.Writer) error{r.WriteHTML, r.WriteJSON, r.writeMonths, r.writeReasons, r.writeKeys} {
				if err := w(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
