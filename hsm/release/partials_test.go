package release

import "testing"

func TestProgressReadsAsAPersonCountsIt(t *testing.T) {
	for p, want := range map[Progress]string{
		{KeyID: "2026-12", Done: 3120, Total: 10000, ETASeconds: 144}: "partial 3,120 of 10,000 (key ID 2026-12), about 2m24s left",
		{KeyID: "2026-12", Done: 10000, Total: 10000}:                 "partial 10,000 of 10,000 (key ID 2026-12)",
		{KeyID: "2026-12", Done: 0, Total: 1}:                         "partial 0 of 1 (key ID 2026-12)",
	} {
		if got := p.String(); got != want {
			t.Errorf("%+v: %q, want %q", p, got, want)
		}
	}
}
