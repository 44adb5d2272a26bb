package release

import (
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
