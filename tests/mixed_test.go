package tests

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
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

// TestSummaryShowsWholeShareKeyIDs: a warrant naming a scoped key ID
// with one envelope and a share-mode key ID shows "Envelopes: 1" beside
// "Key IDs: 2026-12, 2026-11"; the press hands out 2026-11's whole share,
// which opens every envelope of that epoch, so the summary says so on a
// line of its own for that key ID, and only for it.
func TestSummaryShowsWholeShareKeyIDs(t *testing.T) {
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
	if !strings.Contains(st.Summary, "Key ID 2026-11: WHOLE SHARE") {
		t.Errorf("the officer's summary does not say that key ID 2026-11 releases its whole share:\n%s", st.Summary)
	}
	if strings.Contains(st.Summary, "Key ID 2026-12: WHOLE SHARE") {
		t.Errorf("the summary calls the scoped key ID 2026-12 a whole share:\n%s", st.Summary)
	}
	time.Sleep(20 * time.Millisecond)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateReleased || len(st.Packages) != 2 {
		t.Fatalf("release: %+v", st)
	}
}

// TestInvariantEveryKeyIDCheckedBeforeItsEntry: the checks that can
// change with time run again before each key ID's release entry, not only
// the first. A warrant of two key IDs whose first is scoped (hours of
// partials on a Pi's TPM for a long list) reaches the second key ID after
// the warrant's not_after here: the second is refused as
// changed_after_approval (cause: the CRL stale or the warrant expired,
// whichever is checked first) with a refusal entry of its own,
// and the first stays released and logged.
func TestInvariantEveryKeyIDCheckedBeforeItsEntry(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	w, p7s := mixedWarrant(t, r)
	expiry, err := time.Parse(time.RFC3339, w.NotAfter)
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
	before := r.a.Ledger.Size()
	time.Sleep(20 * time.Millisecond)
	r.press()
	id := st.ID
	waitFor(t, "the release to end", 60*time.Second, func() bool {
		s, err := r.daemon.Status(id)
		return err == nil && s.State != release.StateAwaitingPress && s.State != release.StateReleasing
	})
	s, _ := r.daemon.Status(id)
	if i, ok := s.LedgerIndices["2026-11"]; ok {
		data, _ := r.a.Ledger.Entry(i)
		t.Fatalf("key ID 2026-11 was released (ledger entry %d) after the warrant's not_after %s: %s", i, w.NotAfter, data)
	}
	if s.State != release.StateFailed || s.Failed["2026-11"] != release.CodeChangedAfterApproval || (s.Cause != release.Code("expired") && s.Cause != release.Code("crl_stale")) {
		t.Errorf("status after the window closed mid-release: %+v", s)
	}
	if _, ok := s.LedgerIndices["2026-12"]; !ok || len(s.Packages) != 1 || s.Packages[0] != "2026-12" {
		t.Errorf("the scoped key ID released before the window closed is not kept: %+v", s)
	}
	var refused bool
	for i := before; i < r.a.Ledger.Size(); i++ {
		data, err := r.a.Ledger.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ledger.ParseEntry(data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == ledger.KindRefusal && e.KeyID == "2026-11" && e.Reason == string(release.CodeChangedAfterApproval) {
			refused = true
		}
	}
	if !refused {
		t.Errorf("no refusal entry for key ID 2026-11 after entry %d", before)
	}
}
