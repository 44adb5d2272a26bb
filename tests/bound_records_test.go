package tests

import (
	"context"
	"encoding/json"
	"net/http"
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
	done := releaseOnce(t, d, c, "W-bound-done", now)
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
	p7s := c.sign(t, "W-bound-killed", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
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
	entries := servedEntries(t, d, cl)
	last := entries[len(entries)-1]
	if last.Kind != ledger.KindFailure || last.Reason != string(release.CodeInterrupted) {
		t.Fatalf("the newest entry after the restart is %s %s; want the interrupted failure", last.Kind, last.Reason)
	}
}

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

// TestInvariantOldLayoutRecordsAreFinishedOnlyAtTheFirstStart: records of
// the old layout (releases/<id>/request.json) cannot be bound; they are
// finished only at the first start of a version that binds records. After
// it, someone holding the SD card who copies a finished request's record
// there, marked unfinished and without packages, makes no entry at the
// next start (the release happened, its package was delivered).
func TestInvariantOldLayoutRecordsAreFinishedOnlyAtTheFirstStart(t *testing.T) {
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

// TestInvariantOnlyPackagesTheRecordNamesAreServed: after a kill right
// after the release entry, the bound record says the key ID has no
// package and the restart logs it interrupted (the status says so). A
// package note planted offline for that key ID is not served as the
// request's package: GET of it answers not_found, as the status says.
func TestInvariantOnlyPackagesTheRecordNamesAreServed(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	p7s := c.sign(t, "W-break-planted", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	killed := submitUntilKilled(t, d, "entry", p7s, nil)
	settleLedger(t, d)

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

// TestInvariantUpdateBetweenAKillAndTheRestartLogsTheInterruption: the
// previous version wrote the request record with the first release entry,
// unbound (state v2). The device is updated between a kill right after
// that entry and its restart: the first start of the new version finishes
// that record under the previous version's checks, so the ledger never
// says "release ok" alone for a share that never left.
func TestInvariantUpdateBetweenAKillAndTheRestartLogsTheInterruption(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	p7s := c.sign(t, "W-break-upgrade", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	killed := submitUntilKilled(t, d, "entry", p7s, nil)
	asLeftByTheOlderVersion(t, d, killed.ID)

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	n := kindsOf(servedEntries(t, d, cl))
	code, _ := cl.get(t, "/v1/requests/"+killed.ID)
	if n[ledger.KindRelease] != 1 || n[ledger.KindFailure] != 1 {
		t.Fatalf("after an update between a kill after the release entry and the restart: ledger kinds %v (a release entry with no failure after it: the ledger says a share left that never did); GET of the request answers %d", n, code)
	}
}
