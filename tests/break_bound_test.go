package tests

// Attempts against requests in flight bound to the ledger's state: each
// test states what the design promises and fails while the promise does
// not hold.

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

// releaseOnce runs one release of key ID 2026-11 to its end on a child
// daemon and stops it; it returns the request's status.
func releaseOnce(t *testing.T, d *device, c *court, serial string, now time.Time) release.Status {
	t.Helper()
	agency, _ := recipient.Generate("")
	child, cl := startChild(t, d, "")
	defer func() { child.Process.Kill(); child.Wait() }()
	p7s := c.sign(t, serial, agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	status, st, eb := cl.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit %d %+v", status, eb)
	}
	_ = button.Press(context.Background(), filepath.Join(d.data, button.SimSocket), 100*time.Millisecond)
	if st = cl.wait(t, st.ID); st.State != release.StateReleased {
		t.Fatalf("release: %+v", st)
	}
	return st
}

// TestBreakLegacyDirectoryReplaysAFinishedRecord: the bound records close
// "a finished request's record copied under a new ID and marked
// unfinished" for the ledger's notes, but recover still acts on
// unfinished records of the old layout (releases/<id>/request.json)
// without any binding, only matchRecord. Someone holding the SD card
// copies a finished request's record there, marked unfinished and
// without packages: the next start must make no entry (the release
// happened, its package was delivered).
func TestBreakLegacyDirectoryReplaysAFinishedRecord(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	done := releaseOnce(t, d, c, "W-break-legacy", now)

	a, before := bootDaemon(t, d)
	size := a.Ledger.Size()
	booted()

	finished := readNote(t, d.data, requestNote+done.ID)
	var rec map[string]any
	if err := json.Unmarshal(finished, &rec); err != nil {
		t.Fatalf("record: %v", err)
	}
	const copyID = "00112233445566778899aabbccddeeff"
	rec["id"], rec["done"], rec["packages"] = copyID, false, nil
	data, _ := json.Marshal(rec)
	plantRecord(t, d.data, copyID, data)

	a, after := bootDaemon(t, d)
	if after != before || a.Ledger.Size() != size {
		e := newestEntry(t, a.Ledger)
		t.Fatalf("a finished record copied into the old layout made entries: TPM counter %d -> %d, ledger size %d -> %d, newest entry %s %s for key ID %s (after a release that was delivered)",
			before, after, size, a.Ledger.Size(), e.Kind, e.Reason, e.KeyID)
	}
}

// newestEntry parses the newest entry of an open ledger.
func newestEntry(t *testing.T, l *ledger.Ledger) *ledger.Entry {
	t.Helper()
	data, err := l.Entry(l.Size() - 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ledger.ParseEntry(data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestBreakPlantedPackageIsServedForAnInterruptedKeyID: after a kill
// right after the release entry, the bound record says the key ID has no
// package and the restart logs it interrupted (the status says so). A
// package note planted offline for that key ID must not be served as the
// request's package: GET of it must answer not_found, as the status says.
func TestBreakPlantedPackageIsServedForAnInterruptedKeyID(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	p7s := c.sign(t, "W-break-planted", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	killed := submitUntilKilled(t, d, "entry", p7s, nil)

	planted := []byte(`{"planted": "offline, by whoever holds the SD card"}`)
	editNote(t, d.data, packageNote+killed.ID+"/2026-11", func([]byte) []byte { return planted })

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	var st release.Status
	cl.getJSON(t, "/v1/requests/"+killed.ID, &st)
	if st.State != release.StateFailed || st.Failed["2026-11"] != release.CodeInterrupted {
		t.Fatalf("status after the restart: %+v", st)
	}
	code, body := cl.get(t, "/v1/requests/"+killed.ID+"/packages/2026-11")
	if code != http.StatusNotFound {
		t.Fatalf("the status says key ID 2026-11 failed (interrupted), yet its package answers %d with the planted bytes %q", code, body)
	}
}

// TestBreakUpgradeLeavesAReleaseOKAlone: the previous version wrote the
// request record with the first release entry, unbound (state v2). The
// device is updated between a kill right after that entry and its
// restart. The design's promise is that the ledger never says "release
// ok" alone for a share that never left (the old layout's records are
// still finished, TestInvariantKillAfterFirstEntryLogsInterrupted); the
// notes left by the previous version are set aside instead, so the
// release entry stands with no failure after it, and the request is
// unknown to the status API.
func TestBreakUpgradeLeavesAReleaseOKAlone(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	p7s := c.sign(t, "W-break-upgrade", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	killed := submitUntilKilled(t, d, "entry", p7s, nil)
	unbindRecord(t, d, killed.ID) // what the previous version left

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	var health struct {
		LedgerSize int64 `json:"ledger_size"`
	}
	cl.getJSON(t, "/v1/health", &health)
	verifier, _ := os.ReadFile(filepath.Join(d.data, "ledger-key.pub"))
	n := map[ledger.Kind]int{}
	for i := int64(0); i < health.LedgerSize; i++ {
		n[cl.entryAt(t, i, string(bytes.TrimSpace(verifier))).Kind]++
	}
	code, _ := cl.get(t, "/v1/requests/"+killed.ID)
	if n[ledger.KindRelease] != 1 || n[ledger.KindFailure] != 1 {
		t.Fatalf("after an update between a kill after the release entry and the restart: ledger kinds %v (a release entry with no failure after it: the ledger says a share left that never did); GET of the request answers %d", n, code)
	}
}
