package release

import (
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
)

// computePartials is the one place the daemon asks the TPM for partials:
// tpm.Partials on at most tpm.MaxPartials points at a time, each call
// loading the scoped key afresh, so a list of any length fits the TPM's
// per-call cap. done is told how many partials exist after each call.
// Every partial comes after the key ID's one release entry; a release cut
// off between calls is not resumed (recover logs it as interrupted), so no
// partial is ever computed twice under one entry.
func computePartials(t transport.TPM, key *tpm.ScopedKey, points [][]byte, approval *tpm.Approval, done func(int)) ([]tpm.Partial, error) {
	out := make([]tpm.Partial, 0, len(points))
	for start := 0; start < len(points); start += tpm.MaxPartials {
		chunk := points[start:min(start+tpm.MaxPartials, len(points))]
		ps, err := tpm.Partials(t, key, chunk, approval)
		if err != nil {
			return nil, fmt.Errorf("partials %d to %d: %w", start+1, start+len(chunk), err)
		}
		out = append(out, ps...)
		done(len(out))
	}
	return out, nil
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
