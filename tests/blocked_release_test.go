package tests

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
)

// TestInvariantNothingIsUnsealedOnceTheLedgerBlocks: notes are refused
// while the ledger is blocked. Another append (a refusal the API logs for
// another client's submission, a tally) whose counter increment the TPM
// refuses blocks the ledger between a key ID's release entry and its
// package. No package could then be stored, so the share is not unsealed:
// it never leaves the TPM for nothing.
func TestInvariantNothingIsUnsealedOnceTheLedgerBlocks(t *testing.T) {
	var refuse *incrementRefused
	r := newIdleRigVia(t, "court-a", func(tp transport.TPM) transport.TPM {
		refuse = &incrementRefused{TPM: tp}
		return refuse
	})
	r.court.install(t, r.a, r.now())
	r.escrow = provisionLocal(t, r.a, r.tpm, "2026-11")
	hook := func(stage, keyID string) {
		if stage != "entry" {
			return
		}
		// An append beside the release, as the API's refusal of another
		// submission makes, whose increment the TPM refuses.
		refuse.armed.Store(true)
		e := ledger.Entry{Time: r.a.Ledger.Newest(), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: string(release.CodeReplayed)}
		if _, err := r.a.Ledger.Append(e, []byte("another warrant"), nil); !errors.Is(err, ledger.ErrUncounted) {
			t.Errorf("the append beside the release: %v, want ErrUncounted", err)
		}
	}
	r.hook.Store(&hook)
	r.start(t)
	defer r.stop()

	status, st, eb := r.c.submit(t, r.warrant(t, "W-break-blocked", "court-a"))
	if status != http.StatusAccepted {
		t.Fatalf("submit %d %+v", status, eb)
	}
	r.rec.Reset()
	r.press()
	st = r.c.wait(t, st.ID)
	unsealed, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1)
	if unsealed > 0 || st.State != release.StateFailed || st.Failed["2026-11"] != release.CodeLedgerFailed {
		t.Fatalf("after the ledger blocked between the entry and the unseal: %d unseal(s), request %s %v; want none, failed with ledger_failed", unsealed, st.State, st.Failed)
	}
}
