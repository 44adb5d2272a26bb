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

// TestInvariantKillAfterFirstEntryLogsInterrupted: a data directory
// written before request records moved into the ledger's transaction
// kept a record with only the intent (the ledger's size right before the
// first release entry) in releases/<id>/request.json, rewritten to name
// the entry only at the end. Killed in between, such a directory must
// still be finished at the next start: the entry is found from the
// intent, and the release is logged as failed (interrupted), so the
// ledger never says "release ok" alone for a share that never left. The
// state is made here from a kill right after the entry (hook "entry"):
// the record the entry's transaction wrote is unbound (as an older version
// left it) and moved out of the ledger into the old layout, with the
// intent in place of "first_entry".
func TestInvariantKillAfterFirstEntryLogsInterrupted(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	p7s := c.sign(t, "W-kill-window", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)

	st := submitUntilKilled(t, d, "entry", p7s, nil)

	var rec map[string]any
	asLeftByTheOlderVersion(t, d, st.ID)
	editNote(t, d.data, requestNote+st.ID, func(old []byte) []byte {
		if err := json.Unmarshal(old, &rec); err != nil {
			t.Fatalf("record: %v", err)
		}
		return nil
	})
	first, ok := rec["first_entry"].(float64)
	if !ok {
		t.Fatalf("the record written with the entry does not name it: %v", rec)
	}
	rec["intent"] = map[string]any{"from": first}
	delete(rec, "first_entry")
	delete(rec, "first_list")
	delete(rec, "ledger_indices")
	data, _ := json.Marshal(rec)
	plantRecord(t, d.data, st.ID, data)

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	if _, _, eb := cl.submit(t, p7s); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("resubmitted: %+v", eb)
	}
	n := kindsOf(servedEntries(t, d, cl))
	if n[ledger.KindRelease] != 1 {
		t.Fatalf("ledger: %v", n)
	}
	if n[ledger.KindFailure] != 1 {
		t.Errorf("a release entry with no package and no failure entry after a kill before the record named it (ledger kinds %v): the ledger says the share was released", n)
	}
	var after release.Status
	cl.getJSON(t, "/v1/requests/"+st.ID, &after)
	if after.State != release.StateFailed || after.Failed["2026-11"] != release.CodeInterrupted {
		t.Errorf("the old layout's interrupted request after the restart: %+v", after)
	}
}

// TestLegacyRequestDirectoryIsServed: a request released under the old
// layout — its record, done, in releases/<id>/request.json with its
// package beside it — is still reported and served after the upgrade,
// the same bytes. The old layout is made from a release by moving its
// record and package out of the ledger's notes.
func TestLegacyRequestDirectoryIsServed(t *testing.T) {
	now := time.Now().UTC()
	d, c := readyDevice(t, now, "2026-11")
	agency, _ := recipient.Generate("")
	p7s := c.sign(t, "W-legacy", agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)

	child, cl := startChild(t, d, "")
	status, st, eb := cl.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit %d %+v", status, eb)
	}
	_ = button.Press(context.Background(), filepath.Join(d.data, button.SimSocket), 100*time.Millisecond)
	if st = cl.wait(t, st.ID); st.State != release.StateReleased {
		t.Fatalf("release: %+v", st)
	}
	code, pkg := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-11")
	if code != http.StatusOK {
		t.Fatalf("package: %d", code)
	}
	child.Process.Kill()
	child.Wait()
	settleLedger(t, d)

	take := func(key string) (v []byte) {
		editNote(t, d.data, key, func(old []byte) []byte { v = bytes.Clone(old); return nil })
		if v == nil {
			t.Fatalf("no note %s", key)
		}
		return v
	}
	plantRecord(t, d.data, st.ID, take(requestNote+st.ID))
	if err := os.WriteFile(filepath.Join(d.data, release.Dir, st.ID, "2026-11.release.json"), take(packageNote+st.ID+"/2026-11"), 0o644); err != nil {
		t.Fatal(err)
	}

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	var after release.Status
	cl.getJSON(t, "/v1/requests/"+st.ID, &after)
	if after.State != release.StateReleased || len(after.Packages) != 1 {
		t.Fatalf("the old layout's request after the upgrade: %+v", after)
	}
	if code, again := cl.get(t, "/v1/requests/"+st.ID+"/packages/2026-11"); code != http.StatusOK || !bytes.Equal(again, pkg) {
		t.Fatalf("the old layout's package after the upgrade: %d, same bytes %v", code, bytes.Equal(again, pkg))
	}
}
