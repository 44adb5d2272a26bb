package appliance_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// swapEnrollment writes, offline, the enrollment of another TPM (one the
// attacker owns) under the device's custodian ID.
func swapEnrollment(t *testing.T, dir string) {
	t.Helper()
	mine, err := enrollment.Create(tpmtest.StartSwtpm(t).Open(t), "court-a", tpm.EKRSA2048, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(mine)
	if err := os.WriteFile(filepath.Join(dir, appliance.EnrollmentFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestInvariantStartupStateIsBoundToTPMSwappedEnrollmentEKIsBlocked:
// enrollment.json swapped for another TPM's blocks the appliance with
// ErrWrongEK, which resolve-rollback cannot accept; an update's reseal and
// a floor raise seal nothing to the swapped EK (no ledger-key.blob.next
// appears, the checkpoint key's blob is unchanged), and init refuses it.
func TestInvariantStartupStateIsBoundToTPMSwappedEnrollmentEKIsBlocked(t *testing.T) {
	b := bootAppliance(t)
	newPolicy, _ := b.spec.Predict(measuretest.Root("v2"), nil)
	oldPolicy, _ := b.spec.Predict(measuretest.Root("v1"), nil)
	updateKey, updatePublic, _ := escrow.NewUpdateKey("authority")
	verifier, approvalKey, _ := escrow.ParseUpdatePublic(updatePublic)
	_, bundles, err := escrow.Ceremony("2026-11", 2, oldPolicy.PCRs,
		[]escrow.Member{{ID: "court-a", EK: b.a.EK, ImportKey: b.a.ImportKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
		escrow.WithMode(escrow.ModeShare), escrow.WithUpdateKey(verifier, approvalKey))
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := bundles[0].Marshal()
	if _, err := b.a.Provision(b.conn, bundle, time.Now()); err != nil {
		t.Fatal(err)
	}
	keyBlob := filepath.Join(b.dir, appliance.LedgerKeyBlob)
	sealed, _ := os.ReadFile(keyBlob)

	swapEnrollment(t, b.dir)
	b.reopen(t)
	if err := b.a.Ledger.Blocked(); !errors.Is(err, appliance.ErrWrongEK) || !errors.Is(b.a.EKErr, appliance.ErrWrongEK) {
		t.Fatalf("Blocked() = %v, EKErr = %v; want ErrWrongEK", err, b.a.EKErr)
	}
	if _, err := b.a.Ledger.ResolveRollback(time.Now()); err == nil || b.a.Ledger.Blocked() == nil {
		t.Fatalf("resolve accepted the swapped enrollment: %v", err)
	}
	update, err := escrow.SignUpdate(updateKey, newPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.a.Reseal(b.conn, update, time.Now()); err == nil {
		t.Fatal("reseal ran with a swapped enrollment")
	}
	if _, _, err := b.a.RaiseFloor(b.conn, 0, time.Now()); err == nil {
		t.Fatal("a floor raise ran with a swapped enrollment")
	}
	if _, err := os.Stat(keyBlob + ".next"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a resealed checkpoint key was written: %v", err)
	}
	if now, _ := os.ReadFile(keyBlob); string(now) != string(sealed) {
		t.Fatal("the checkpoint key was sealed again")
	}

	// Init of a fresh data directory refuses it too.
	fresh := t.TempDir()
	data, _ := os.ReadFile(filepath.Join(b.dir, appliance.EnrollmentFile))
	if err := os.WriteFile(filepath.Join(fresh, appliance.EnrollmentFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := appliance.Init(fresh, b.conn, measure.DefaultSpec().PCRs(), time.Now()); !errors.Is(err, appliance.ErrWrongEK) {
		t.Fatalf("init with another TPM's enrollment: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fresh, appliance.LedgerKeyBlob)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("init sealed a checkpoint key to another TPM: %v", err)
	}
}
