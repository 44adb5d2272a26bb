package tests

import (
	be "encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
)

// incrementRefused is a TPM transport that, once armed, refuses the next
// TPM2_NV_Increment before it reaches the TPM, as a TPM answering
// TPM_RC_NV_RATE or a bus error would.
type incrementRefused struct {
	transport.TPM
	armed atomic.Bool
}

func (f *incrementRefused) Send(cmd []byte) ([]byte, error) {
	if len(cmd) >= 10 && tpm2.TPMCC(be.BigEndian.Uint32(cmd[6:10])) == tpm2.TPMCCNVIncrement && f.armed.CompareAndSwap(true, false) {
		return nil, errors.New("NV_Increment refused")
	}
	return f.TPM.Send(cmd)
}

// TestInvariantUncountedFirstEntryLogsInterrupted: the request's first
// release entry commits (with the record note naming it) and then the TPM
// refuses the counter's increment. Nothing is unsealed, the officer is
// told ledger_failed, and the record stays unfinished under that entry
// (never rewritten as done without it), so the restart, which finishes
// the increment, logs the key ID as interrupted: the ledger never says
// "release ok" alone for a share that never left.
func TestInvariantUncountedFirstEntryLogsInterrupted(t *testing.T) {
	var refuse *incrementRefused
	r := newIdleRigVia(t, "court-a", func(tp transport.TPM) transport.TPM {
		refuse = &incrementRefused{TPM: tp}
		return refuse
	})
	r.court.install(t, r.a, r.now())
	r.escrow = provisionLocal(t, r.a, r.tpm, "2026-11")
	r.start(t)

	status, st, eb := r.c.submit(t, r.warrant(t, "W-uncounted", "court-a"))
	if status != http.StatusAccepted {
		t.Fatalf("submit %d %+v", status, eb)
	}
	r.rec.Reset()
	refuse.armed.Store(true)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateFailed || st.Failed["2026-11"] != release.CodeLedgerFailed {
		t.Fatalf("the officer is told %s %v, want failed ledger_failed", st.State, st.Failed)
	}
	if n, _ := r.rec.EncryptedResponses(tpm2.TPMCCUnseal, 1); n != 0 {
		t.Fatalf("the share was unsealed %d times after an uncounted entry", n)
	}
	first, ok := st.LedgerIndices["2026-11"]
	if !ok || !errors.Is(r.a.Ledger.Blocked(), ledger.ErrBlocked) {
		t.Fatalf("ledger indices %v, blocked %v: want the uncounted entry named and the ledger blocked", st.LedgerIndices, r.a.Ledger.Blocked())
	}
	data, err := r.a.Ledger.GetNote([]byte(requestNote+st.ID), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Done       bool              `json:"done"`
		FirstEntry *int64            `json:"first_entry"`
		Failed     map[string]string `json:"failed"`
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Done || rec.FirstEntry == nil || *rec.FirstEntry != first || len(rec.Failed) != 0 {
		t.Fatalf("stored record: done %v, first entry %v, failed %v; want unfinished under entry %d, nothing failed", rec.Done, rec.FirstEntry, rec.Failed, first)
	}
	r.stop()

	r.open(t)
	r.start(t)
	defer r.stop()
	if err := r.a.Ledger.Blocked(); err != nil {
		t.Fatalf("the restart did not finish the increment: %v", err)
	}
	kinds := map[ledger.Kind]int{}
	var interrupted int
	for i := first; i < r.a.Ledger.Size(); i++ {
		raw, err := r.a.Ledger.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		e, err := ledger.ParseEntry(raw)
		if err != nil {
			t.Fatal(err)
		}
		kinds[e.Kind]++
		if e.Kind == ledger.KindFailure && e.KeyID == "2026-11" && e.Reason == string(release.CodeInterrupted) {
			interrupted++
		}
	}
	var after release.Status
	r.c.getJSON(t, "/v1/requests/"+st.ID, &after)
	if kinds[ledger.KindRelease] != 1 || interrupted != 1 {
		t.Errorf("from entry %d on: %v, %d interrupted failures of 2026-11; want the release entry and one interrupted failure after it", first, kinds, interrupted)
	}
	if after.State != release.StateFailed || after.Failed["2026-11"] != release.CodeInterrupted {
		t.Errorf("after the restart the request is %s %v, want failed interrupted", after.State, after.Failed)
	}
}
