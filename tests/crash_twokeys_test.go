package tests

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

// TestInvariantKillAtASecondKeyIDsEntryKeepsTheFirstAndLogsTheSecond: the
// request record is written once before the first release entry (with the
// intent) and once when the request is done. A kill right after the
// second key ID's release entry leaves a record that names neither entry
// nor the first key ID's package. After the restart the first key ID's
// package is served, the second is logged as interrupted, the warrant is
// spent, and no key ID is released twice.
func TestInvariantKillAtASecondKeyIDsEntryKeepsTheFirstAndLogsTheSecond(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	conn, err := tpm.Open(d.sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	a, err := appliance.Open(d.data, conn)
	if err != nil {
		t.Fatal(err)
	}
	provisionLocal(t, a, conn, "2026-12")
	a.Close()
	conn.Close()

	agency, _ := recipient.Generate("")
	socket := filepath.Join(d.data, button.SimSocket)
	p7s := c.sign(t, "W-kill-two", agency.Public(), []string{"court-a"}, []string{"2026-11", "2026-12"}, now)
	child, cl := startChild(t, d, "entry@2026-12")
	status, st, eb := cl.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit %d %+v", status, eb)
	}
	_ = button.Press(context.Background(), socket, 100*time.Millisecond)
	child.Wait()
	if ws, ok := child.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the daemon was not killed: %v", child.ProcessState)
	}

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	var after release.Status
	cl.getJSON(t, "/v1/requests/"+st.ID, &after)
	if len(after.Packages) != 1 || after.Packages[0] != "2026-11" || after.Failed["2026-12"] != release.CodeInterrupted {
		t.Fatalf("after a kill at the second entry: %+v", after)
	}
	if code, _ := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-11"); code != http.StatusOK {
		t.Fatalf("the first key ID's package is gone: %d", code)
	}
	if code, _ := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-12"); code != http.StatusNotFound {
		t.Fatalf("a package for the interrupted key ID: %d", code)
	}
	if _, _, eb := cl.submit(t, p7s); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("resubmitted after the kill: %+v", eb)
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
	if n[ledger.KindRelease] != 2 || n[ledger.KindFailure] != 1 {
		t.Fatalf("ledger kinds after the kill: %v (want 2 release entries, 1 failure)", n)
	}
}
