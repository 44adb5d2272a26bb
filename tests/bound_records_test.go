package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
)

// TestInvariantOnlyRequestsLeftInFlightAreFinished: a request's record is
// bound to the ledger's state while the request is in flight, so what
// someone editing the SD card offline does to the records changes nothing
// the ledger says. A finished request's record copied under a new ID and
// marked unfinished, or marked unfinished again with its package removed,
// makes no entry at the next start (no "interrupted" failure after a
// release that happened); a package planted for a request killed after
// its entry does not hide the interruption.
func TestInvariantOnlyRequestsLeftInFlightAreFinished(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	socket := filepath.Join(d.data, button.SimSocket)

	// A release that finishes.
	child, cl := startChild(t, d, "")
	p7s := c.sign(t, "W-bound-done", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	status, done, eb := cl.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit %d %+v", status, eb)
	}
	_ = button.Press(context.Background(), socket, 100*time.Millisecond)
	if done = cl.wait(t, done.ID); done.State != release.StateReleased {
		t.Fatalf("release: %+v", done)
	}
	child.Process.Kill()
	child.Wait()
	settleLedger(t, d)

	unfinished := func(old []byte) []byte {
		var rec map[string]any
		if err := json.Unmarshal(old, &rec); err != nil {
			t.Fatalf("record: %v", err)
		}
		rec["done"], rec["packages"] = false, nil
		data, _ := json.Marshal(rec)
		return data
	}
	const copyID = "00112233445566778899aabbccddeeff"
	finished := readNote(t, d.data, requestNote+done.ID)
	editNote(t, d.data, requestNote+copyID, func([]byte) []byte {
		var rec map[string]any
		json.Unmarshal(unfinished(finished), &rec)
		rec["id"] = copyID
		data, _ := json.Marshal(rec)
		return data
	})
	a, before := bootDaemon(t, d)
	size := a.Ledger.Size()
	if err := a.Ledger.Blocked(); err != nil {
		t.Fatalf("a copied record blocked the ledger: %v", err)
	}
	booted()
	if readNote(t, d.data, asideNote+copyID) == nil {
		t.Error("the copied record was not set aside")
	}

	editNote(t, d.data, requestNote+done.ID, unfinished)
	editNote(t, d.data, packageNote+done.ID+"/2026-11", func([]byte) []byte { return nil })
	a, after := bootDaemon(t, d)
	if after != before || a.Ledger.Size() != size {
		t.Fatalf("records edited offline made entries: TPM counter %d -> %d, ledger size %d -> %d", before, after, size, a.Ledger.Size())
	}
	booted()

	// A release killed after its entry, with a package planted for it.
	p7s = c.sign(t, "W-bound-killed", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	killed := submitUntilKilled(t, d, "entry", p7s, nil)
	settleLedger(t, d)

	planted := readNote(t, d.data, packageNote+done.ID+"/2026-11")
	if planted == nil {
		planted = []byte(`{"planted": true}`)
	}
	editNote(t, d.data, packageNote+killed.ID+"/2026-11", func([]byte) []byte { return planted })

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	var st release.Status
	cl.getJSON(t, "/v1/requests/"+killed.ID, &st)
	if st.State != release.StateFailed || st.Failed["2026-11"] != release.CodeInterrupted {
		t.Fatalf("a planted package hid the interruption: %+v", st)
	}
	var health struct {
		LedgerSize int64 `json:"ledger_size"`
	}
	cl.getJSON(t, "/v1/health", &health)
	verifier, _ := os.ReadFile(filepath.Join(d.data, "ledger-key.pub"))
	last := cl.entryAt(t, health.LedgerSize-1, string(bytes.TrimSpace(verifier)))
	if last.Kind != ledger.KindFailure || last.Reason != string(release.CodeInterrupted) {
		t.Fatalf("the newest entry after the restart is %s %s; want the interrupted failure", last.Kind, last.Reason)
	}
}
