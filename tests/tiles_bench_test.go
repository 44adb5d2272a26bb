package tests

import (
	"bytes"
	"compress/gzip"
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
// entries/s for full entry bundles and hash tiles, beside the baseline of
// the same run, /v1/entries/{i} (one entry, its proof and a fresh
// checkpoint per request). It reports the bytes published per entry both
// ways: the whole tile layout of the ledger (what ledger export writes)
// over its size, and a /v1/entries answer; gzip-bytes/entry is a full
// bundle compressed, as a static host or a proxy would serve it.
//
//	go test -run '^$' -bench TileServing -benchtime 2s ./tests
func BenchmarkTileServing(b *testing.B) {
	const n = 1024 // four full tiles
	r := newRig(b)
	defer r.stop()
	growLedger(b, r, n)
	srv := httptest.NewServer((&release.API{Daemon: r.daemon, Limit: release.NewLimiter(1e9, 1e9)}).Handler())
	defer srv.Close()
	hc := srv.Client()
	get := func(b *testing.B, path string) int {
		resp, err := hc.Get(srv.URL + path)
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
	b.Run("tiles/entry-bundle", func(b *testing.B) {
		i := 0
		for b.Loop() {
			get(b, fmt.Sprintf("%stile/entries/%03d", release.TlogPrefix, i%(n/256)))
			i++
		}
		rate := perSecond(b)
		b.ReportMetric(rate, "req/s")
		b.ReportMetric(rate*256, "entries/s")
		if baseline > 0 {
			b.ReportMetric(rate*256/baseline, "x-baseline-entries/s")
		}
	})
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
		code, bundle := r.c.get(b, release.TlogPrefix+"tile/entries/000")
		if code != http.StatusOK {
			b.Fatalf("bundle: %d", code)
		}
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(bundle)
		w.Close()
		b.ReportMetric(float64(total)/n, "bytes/entry")
		b.ReportMetric(float64(len(bundle))/256, "bundle-bytes/entry")
		b.ReportMetric(float64(z.Len())/256, "gzip-bytes/entry")
	})
}
