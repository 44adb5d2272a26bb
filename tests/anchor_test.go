package tests

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/appliance/appliancetest"
	"github.com/custodian-project/custodian/hsm/release"
)

// TestInvariantStartupStateIsBoundToTPMForeignLedgerKeyDaemonRefuses: a
// daemon started on a data directory forged under a checkpoint key of the
// forger's own (sealed to the device's EK and PCRs, padded to the TPM's
// counter, its binding valid under that key, the court's trust store in
// place) refuses every warrant with foreign_ledger_key, logs nothing, and
// says so in its health.
func TestInvariantStartupStateIsBoundToTPMForeignLedgerKeyDaemonRefuses(t *testing.T) {
	r := newRig(t)
	r.court.install(t, r.a, time.Now().UTC())
	r.stop()
	appliancetest.ForgeLedgerKey(t, r.tpm, r.d.data)

	r.open(t)
	r.start(t)
	defer r.stop()
	var health struct {
		OK      bool   `json:"ok"`
		Blocked string `json:"blocked"`
	}
	code, body := r.c.get(t, "/v1/health")
	if err := json.Unmarshal(body, &health); err != nil || code != http.StatusOK || health.OK || !strings.Contains(health.Blocked, "not the one this TPM anchored") {
		t.Fatalf("health: %d %s", code, body)
	}
	size := r.a.Ledger.Size()
	status, _, eb := r.c.submit(t, r.warrant(t, "W-foreign"))
	want := release.CodeForeignLedgerKey
	if status != release.HTTPStatus(want) || eb.Error.Code != want || eb.Error.LedgerIndex != nil || r.a.Ledger.Size() != size {
		t.Fatalf("want %s (%d) and no entry, got %d %+v (ledger %d → %d)", want, release.HTTPStatus(want), status, eb, size, r.a.Ledger.Size())
	}
}
