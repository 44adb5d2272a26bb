package release

import (
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
)

// computePartials is the one place the daemon asks the TPM for partials:
// one tpm.PartialsBatch for every point of the key ID, in the warrant's
// order, with one proof for all of them; done is told how many partials
// exist after each. The batch comes after the key ID's one release
// entry; a release cut off before it ends is not resumed (recover logs
// it as interrupted), so no partial is ever computed twice under one
// entry. The device checks its TPM's work before it ships: a fault shows
// here, not at the agency.
func computePartials(t transport.TPM, key *tpm.ScopedKey, proofKey []byte, points [][]byte, approval *tpm.Approval, done func(int)) (*tpm.Batch, error) {
	b, err := tpm.PartialsBatch(t, key, points, approval, func(n, _ int) { done(n) })
	if err != nil {
		return nil, err
	}
	if err := tpm.VerifyBatch(proofKey, points, b); err != nil {
		return nil, fmt.Errorf("the TPM's batch of %d partials does not verify: %w", len(points), err)
	}
	return b, nil
}

// Progress is how far a scoped release has come, for the officer: the
// partials of KeyID done of Total, and the estimated time left.
type Progress struct {
	KeyID      string  `json:"key_id"`
	Done       int     `json:"done"`
	Total      int     `json:"total"`
	ETASeconds float64 `json:"eta_seconds"`
}

// String is "partial 3,120 of 10,000 (key ID 2026-12), about 2m10s left".
func (p Progress) String() string {
	s := fmt.Sprintf("partial %s of %s (key ID %s)", warrant.Thousands(p.Done), warrant.Thousands(p.Total), p.KeyID)
	if p.Done < p.Total && p.Done > 0 {
		s += fmt.Sprintf(", about %s left", (time.Duration(p.ETASeconds) * time.Second).String())
	}
	return s
}

// progressEvery is how often the display gets a progress line.
const progressEvery = 2 * time.Second

// progress returns the callback that keeps a request's status and the
// display up to date while the TPM computes total partials of keyID.
func (d *Daemon) progress(r *request, keyID string, total int) func(int) {
	start := time.Now()
	var shown time.Time
	d.update(r, func(s *Status) { s.Progress = &Progress{KeyID: keyID, Total: total} })
	return func(done int) {
		elapsed := time.Since(start)
		p := Progress{KeyID: keyID, Done: done, Total: total,
			ETASeconds: (elapsed.Seconds() / float64(done) * float64(total-done))}
		p.ETASeconds = float64(int64(p.ETASeconds + 0.5))
		d.update(r, func(s *Status) { s.Progress = &p })
		if done == total || time.Since(shown) >= progressEvery {
			shown = time.Now()
			fmt.Fprintf(d.cfg.Display, "request %s: %s\n", r.status.ID[:8], p)
		}
		d.cfg.Hook("partials", keyID)
	}
}
