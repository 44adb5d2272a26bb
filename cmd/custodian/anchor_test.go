package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/appliance/appliancetest"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantStartupStateIsBoundToTPMForeignLedgerKeyFailsLedgerVerify:
// a data directory forged under a checkpoint key of the forger's own
// (sealed to the device's EK and PCRs, padded to the TPM's counter, its
// binding valid under that key) fails custodian ledger verify with its
// own message and a hint, and resolve-rollback cannot accept it; a second
// ledger init on the TPM is refused with advice.
func TestInvariantStartupStateIsBoundToTPMForeignLedgerKeyFailsLedgerVerify(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	d := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "data")}
	measureBoot(t, sw)
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", filepath.Join(dir, "e.json"))...)
	mustRun(t, d.args("ledger", "init")...)
	mustRun(t, d.args("ledger", "verify")...)

	other := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "other")}
	if err := os.MkdirAll(other.data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other.data, "enrollment.json"), readFile(t, filepath.Join(d.data, "enrollment.json")), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := custodian(t, other.args("ledger", "init")...)
	if code == 0 || !strings.Contains(errOut, "ledger was created before") || !strings.Contains(errOut, "hint: ledger init runs once per TPM") {
		t.Fatalf("a second ledger init on the TPM: exit %d, %q", code, errOut)
	}

	conn, err := tpm.Open(sw.Spec())
	if err != nil {
		t.Fatal(err)
	}
	appliancetest.ForgeLedgerKey(t, conn, d.data)
	conn.Close()
	code, _, errOut = custodian(t, d.args("ledger", "verify")...)
	if code == 0 || !strings.Contains(errOut, "not the one this TPM anchored at ledger init") || !strings.Contains(errOut, "hint: this data directory's checkpoint key") {
		t.Fatalf("ledger verify on a forged directory: exit %d, %q", code, errOut)
	}
	code, _, errOut = custodian(t, d.args("ledger", "resolve-rollback")...)
	if code == 0 || !strings.Contains(errOut, "not the one this TPM anchored") {
		t.Fatalf("resolve-rollback on a forged directory: exit %d, %q", code, errOut)
	}
	code, _, errOut = custodian(t, d.args("ledger", "checkpoint")...)
	if code == 0 || !strings.Contains(errOut, "hint: this data directory's checkpoint key") {
		t.Fatalf("ledger checkpoint with a forged key: exit %d, %q", code, errOut)
	}
}
