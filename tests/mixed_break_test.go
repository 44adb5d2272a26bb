package tests

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// mixedWarrant provisions a scoped key ID 2026-12 beside the rig's
// share-mode 2026-11 and signs a warrant for both (scoped first) that
// names one envelope of 2026-12.
func mixedWarrant(t *testing.T, r *rig) (*warrant.Warrant, []byte) {
	t.Helper()
	now := time.Now().UTC()
	r.court.install(t, r.a, now)
	pub := provisionLocal(t, r.a, r.tpm, "2026-12", escrow.WithMode(escrow.ModeScoped))
	_, refs := sealEnvelopes(t, pub, "alice@example.org", 1)
	w := draftWarrant("W-mixed", r.agency.Public(), []string{"court-a", "court-z"}, []string{"2026-12", "2026-11"}, now)
	w.Envelopes = refs
	return w, r.court.signDocument(t, w, now)
}

// TestBreakMixedWarrantSummaryHidesAWholeShare: a warrant naming a scoped
// key ID with one envelope and a share-mode key ID is shown as
// "Envelopes: 1" beside "Key IDs: 2026-12, 2026-11", and docs/officer.md
// tells the officer the envelope count is "all this release can open";
// the press then hands out 2026-11's whole share, which opens every
// envelope of that epoch. What the display shows must say which key ID
// releases a whole share.
func TestBreakMixedWarrantSummaryHidesAWholeShare(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	_, p7s := mixedWarrant(t, r)
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	if !strings.Contains(st.Summary, "Envelopes:  1 (") {
		t.Fatalf("summary:\n%s", st.Summary)
	}
	var says bool
	for _, line := range strings.Split(st.Summary, "\n") {
		if strings.Contains(line, "2026-11") && strings.Contains(strings.ToLower(line), "share") {
			says = true
		}
	}
	if !says {
		t.Errorf("the officer's summary does not say that key ID 2026-11 releases its whole share (every envelope of the epoch), only:\n%s", st.Summary)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateReleased || len(st.Packages) != 2 {
		t.Fatalf("release: %+v", st)
	}
}

// TestBreakLaterKeyIDReleasedAfterTheWarrantExpired: verification runs
// again only before the first release entry. A warrant of two key IDs
// whose first is a scoped key with a long list (hours of partials on a
// Pi's TPM) reaches the second key ID's release entry and share after the
// warrant's not_after (or after its judge was revoked): nothing checks
// again. Here the clock passes not_after while the first key ID's
// partials are computed; the second key ID must not be released.
func TestBreakLaterKeyIDReleasedAfterTheWarrantExpired(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	w, p7s := mixedWarrant(t, r)
	notAfter := w.NotAfter
	expiry, err := time.Parse(time.RFC3339, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	hook := func(stage, keyID string) {
		if stage == "partials" && keyID == "2026-12" {
			// The partials took until a day past the warrant's window.
			r.skew.Store(int64(time.Until(expiry) + 24*time.Hour))
		}
	}
	r.hook.Store(&hook)
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	id := st.ID
	waitFor(t, "the release to end", 60*time.Second, func() bool {
		s, err := r.daemon.Status(id)
		return err == nil && s.State != release.StateAwaitingPress && s.State != release.StateReleasing
	})
	s, _ := r.daemon.Status(id)
	i, ok := s.LedgerIndices["2026-11"]
	if !ok {
		t.Logf("2026-11 was not released: %+v", s)
		return
	}
	data, err := r.a.Ledger.Entry(i)
	if err != nil {
		t.Fatal(err)
	}
	t.Errorf("key ID 2026-11 was released (ledger entry %d, package %v) after the warrant's not_after %s: %s", i, s.Packages, notAfter, data)
}
