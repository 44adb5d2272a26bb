package tests

import (
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/custodian-project/custodian/hsm/release"
)

// BenchmarkTileServing measures the daemon serving its ledger on loopback
// (plain HTTP, one keep-alive client, no rate limit): requests/s and
// entries/s for full entry bundles (as they are, and gzip-compressed for a
// client that asks) and hash tiles, beside the baseline of the same run,
// /v1/entries/{i} (one entry, its proof and a fresh checkpoint per
// request). It reports the bytes per entry on the wire each way, and the
// bytes the whole tile layout of the ledger takes (what ledger export
// writes) over its size.
//
//	go test -run '^$' -bench TileServing -benchtime 2s ./tests
func BenchmarkTileServing(b *testing.B) {
	const n = 1024 // four full tiles
	r := newRig(b)
	defer r.stop()
	growLedger(b, r, n)
	srv := httptest.NewServer((&release.API{Daemon: r.daemon, Limit: release.NewLimiter(1e9, 1e9)}).Handler())
	defer srv.Close()
	// The body as sent: a gzip answer is counted compressed.
	raw := srv.Client().Transport.(*http.Transport).Clone()
	raw.DisableCompression = true
	hc := &http.Client{Transport: raw}
	getAs := func(b *testing.B, path, accept string) int {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		k, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return int(k)
	}
	get := func(b *testing.B, path string) int { return getAs(b, path, "") }
	perSecond := func(b *testing.B) float64 { return float64(b.N) / b.Elapsed().Seconds() }

	var baseline float64 // entries/s through /v1/entries
	b.Run("baseline/v1-entries", func(b *testing.B) {
		var bytes, i int
		for b.Loop() {
			bytes += get(b, fmt.Sprintf("/v1/entries/%d", i%n))
			i++
		}
		baseline = perSecond(b)
		b.ReportMetric(baseline, "req/s")
		b.ReportMetric(baseline, "entries/s")
		b.ReportMetric(float64(bytes)/float64(i), "bytes/entry")
	})
	for _, accept := range []string{"identity", "gzip"} {
		b.Run("tiles/entry-bundle/"+accept, func(b *testing.B) {
			var bytes, i int
			for b.Loop() {
				bytes += getAs(b, fmt.Sprintf("%stile/entries/%03d", release.TlogPrefix, i%(n/256)), accept)
				i++
			}
			rate := perSecond(b)
			b.ReportMetric(rate, "req/s")
			b.ReportMetric(rate*256, "entries/s")
			b.ReportMetric(float64(bytes)/float64(i*256), "wire-bytes/entry")
			if baseline > 0 {
				b.ReportMetric(rate*256/baseline, "x-baseline-entries/s")
			}
		})
	}
	b.Run("tiles/hash-tile", func(b *testing.B) {
		i := 0
		for b.Loop() {
			get(b, fmt.Sprintf("%stile/0/%03d", release.TlogPrefix, i%(n/256)))
			i++
		}
		b.ReportMetric(perSecond(b), "req/s")
	})
	b.Run("tiles/checkpoint", func(b *testing.B) {
		for b.Loop() {
			get(b, release.TlogPrefix+"checkpoint")
		}
		b.ReportMetric(perSecond(b), "req/s")
	})
	b.Run("tiles/published", func(b *testing.B) {
		dir := b.TempDir()
		for b.Loop() {
			if _, err := r.a.Ledger.Export(dir); err != nil {
				b.Fatal(err)
			}
		}
		var total int64
		err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			info, err := e.Info()
			total += info.Size()
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(total)/n, "bytes/entry")
	})
}
