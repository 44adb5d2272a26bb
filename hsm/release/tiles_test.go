package release

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAcceptsGzipFollowsTheWeights(t *testing.T) {
	for header, want := range map[string]bool{
		"":                         false,
		"gzip":                     true,
		"GZIP":                     true,
		"x-gzip":                   true,
		"gzip, deflate, br":        true,
		"br;q=1.0, gzip;q=0.8":     true,
		"gzip;q=0":                 false,
		"gzip; q=0.000":            false,
		"gzip;Q=0.":                false,
		"gzip;q=0.001":             true,
		"identity":                 false,
		"*":                        false,
		"deflate, gzipped":         false,
		"identity;q=1, gzip ; q=1": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("%q: %v, want %v", header, got, want)
		}
	}
}

// FuzzAcceptsGzip: any header is answered without a panic, and gzip is
// never chosen where the word is absent or the client gave it weight 0.
func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "gzip;q=0", "br, gzip;q=0.5", "*;q=0", ",,;;=", "x-gzip;q=0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		if acceptsGzip(header) && !strings.Contains(strings.ToLower(header), "gzip") {
			t.Fatalf("%q: gzip chosen though not offered", header)
		}
		if acceptsGzip(header+", gzip;q=0") && !acceptsGzip(header) {
			t.Fatalf("%q: a refusal of gzip added after made it accepted", header)
		}
	})
}

// TestTileRoutesAnswerBusyWhenFull: when every tile slot is taken for
// longer than tileWait, a tile request gets 503 ledger_busy with
// Retry-After, and takes no slot.
func TestTileRoutesAnswerBusyWhenFull(t *testing.T) {
	a := &API{Tiles: 1}
	h := a.Handler()
	a.tiles <- struct{}{} // a tile answer in progress
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, TlogPrefix+"tile/0/000", nil))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), string(CodeLedgerBusy)) {
		t.Fatalf("all slots taken: %d, Retry-After %q, %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if len(a.tiles) != 1 {
		t.Fatalf("the refused request left %d slots taken", len(a.tiles))
	}
}
