package release

import (
	"testing"

	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
)

// TestOneBatchAnswersTheLongestList: a key ID's partials are one batch, so
// the longest list a warrant may name fits one.
func TestOneBatchAnswersTheLongestList(t *testing.T) {
	if warrant.MaxListEntries > tpm.MaxBatch {
		t.Fatalf("a list names up to %d envelopes, a batch holds %d", warrant.MaxListEntries, tpm.MaxBatch)
	}
}

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
