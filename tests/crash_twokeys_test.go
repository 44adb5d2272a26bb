package tests

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
)

// TestInvariantKillAtASecondKeyIDsEntryKeepsTheFirstAndLogsTheSecond: the
// request record is written with each release entry and each package. A
// kill right after the second key ID's release entry leaves a record that
// names both entries and the first key ID's package. After the restart
// the first key ID's package is served, the second is logged as
// interrupted (a failure after its release entry), the warrant is spent,
// and no key ID is released twice.
func TestInvariantKillAtASecondKeyIDsEntryKeepsTheFirstAndLogsTheSecond(t *testing.T) {
	killTwoKeyIDs(t, "entry@2026-12", []string{"2026-11"}, 2, 1, 0)
}

// TestInvariantKillBetweenTwoKeyIDsLogsTheSecond: killed after the first
// key ID's package is stored, before the second key ID was begun: the
// second, never released, is logged as an interrupted refusal, not as a
// failure, which would stand after no release entry of this request.
func TestInvariantKillBetweenTwoKeyIDsLogsTheSecond(t *testing.T) {
	killTwoKeyIDs(t, "stored@2026-11", []string{"2026-11"}, 1, 0, 1)
}

// TestInvariantKillAtTheFirstOfTwoKeyIDsLogsBoth: killed right after the
// first release entry, with nothing sealed: the first is a failure after
// its entry, the second a refusal.
func TestInvariantKillAtTheFirstOfTwoKeyIDsLogsBoth(t *testing.T) {
	killTwoKeyIDs(t, "entry@2026-11", nil, 1, 1, 1)
}

// killTwoKeyIDs kills the daemon at crashAt during a release of key IDs
// 2026-11 and 2026-12 and checks, after a restart, the packages served,
// every other key ID logged as interrupted, the warrant spent, and the
// ledger's release and failure entries and its refusals for key IDs never
// released (interrupted).
func killTwoKeyIDs(t *testing.T, crashAt string, packages []string, releases, failures, neverReleased int) {
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
	p7s := c.sign(t, "W-kill-two", agency.Public(), []string{"court-a"}, []string{"2026-11", "2026-12"}, now)
	st := submitUntilKilled(t, d, crashAt, p7s, nil)

	running, cl := startChild(t, d, "")
	defer func() { running.Process.Kill(); running.Wait() }()
	var after release.Status
	cl.getJSON(t, "/v1/requests/"+st.ID, &after)
	if !slices.Equal(after.Packages, packages) {
		t.Fatalf("after a kill at %s: packages %v, want %v (%+v)", crashAt, after.Packages, packages, after)
	}
	for _, k := range []string{"2026-11", "2026-12"} {
		want := http.StatusNotFound
		if slices.Contains(packages, k) {
			want = http.StatusOK
		} else if after.Failed[k] != release.CodeInterrupted {
			t.Errorf("after a kill at %s: key ID %s is not logged as interrupted: %+v", crashAt, k, after)
		}
		if code, _ := cl.get(t, "/v1/requests/"+st.ID+"/packages/"+k); code != want {
			t.Errorf("after a kill at %s: package of %s answers %d, want %d", crashAt, k, code, want)
		}
	}
	if _, _, eb := cl.submit(t, p7s); eb.Error.Code != release.CodeReplayed {
		t.Fatalf("resubmitted after the kill: %+v", eb)
	}
	entries := servedEntries(t, d, cl)
	n, interrupted := kindsOf(entries), 0
	for _, e := range entries {
		if e.Kind == ledger.KindRefusal && e.Reason == string(release.CodeInterrupted) {
			interrupted++
		}
	}
	if n[ledger.KindRelease] != releases || n[ledger.KindFailure] != failures || interrupted != neverReleased {
		t.Fatalf("ledger kinds after a kill at %s: %v, %d interrupted refusals (want %d release entries, %d failures, %d interrupted refusals)",
			crashAt, n, interrupted, releases, failures, neverReleased)
	}
}
