package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
)

// TestBreakKillBeforeTheRecordNamesItsFirstEntry: the first release
// entry (with the warrant's replay key) is durable before the request
// record is rewritten to name it. A kill in between leaves the record
// as it was written before the entry, without "first_entry"; at the next
// start recover sets it aside as not matching the ledger, and no failure
// entry follows the release entry: the ledger says "release ok" for a
// share that never left, the warrant is spent, and nothing says why. The
// state on disk after such a kill is made here from a kill right after
// the entry (hook "entry") by taking "first_entry" out of the record, as
// it was a moment before. The release must be logged as failed
// (interrupted).
func TestBreakKillBeforeTheRecordNamesItsFirstEntry(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	socket := filepath.Join(d.data, button.SimSocket)
	p7s := c.sign(t, "W-kill-window", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)

	child, cl := startChild(t, d, "entry")
	status, st, eb := cl.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit %d %+v", status, eb)
	}
	_ = button.Press(context.Background(), socket, 100*time.Millisecond)
	child.Wait()
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the daemon was not killed: %v", child.ProcessState)
	}
	path := filepath.Join(d.data, release.Dir, st.ID, "request.json")
	var rec map[string]any
	if data, err := os.ReadFile(path); err != nil || json.Unmarshal(data, &rec) != nil {
		t.Fatalf("record: %v", err)
	}
	delete(rec, "first_entry")
	delete(rec, "first_list")
	data, _ := json.Marshal(rec)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	if _, _, eb := cl.submit(t, p7s); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("resubmitted: %+v", eb)
	}
	var health struct {
		LedgerSize int64 `json:"ledger_size"`
	}
	cl.getJSON(t, "/v1/health", &health)
	verifier, _ := os.ReadFile(filepath.Join(d.data, "ledger-key.pub"))
	n := map[ledger.Kind]int{}
	for i := int64(0); i < health.LedgerSize; i++ {
		n[cl.entryAt(t, i, string(bytes.TrimSpace(verifier))).Kind]++
	}
	if n[ledger.KindRelease] != 1 {
		t.Fatalf("ledger: %v", n)
	}
	if n[ledger.KindFailure] != 1 {
		t.Errorf("a release entry with no package and no failure entry after a kill before the record named it (ledger kinds %v): the ledger says the share was released", n)
	}
}
