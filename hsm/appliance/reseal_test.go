package appliance_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestResealMovesSharesToAnApprovedImage: on the old image a signed update
// reseals the share and the checkpoint key, and approves the new image for
// the scoped key beside them; after a reboot into the new image they open
// (the scoped key through the TPM-checked approval) and are promoted. A
// forged update is refused and logged.
func TestResealMovesSharesToAnApprovedImage(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		spec := measure.DefaultSpec()
		oldPolicy, _ := spec.Predict(measuretest.Root("v1"), nil)
		newPolicy, _ := spec.Predict(measuretest.Root("v2"), nil)
		if _, err := measure.Boot(conn, spec, measuretest.Root("v1"), t.TempDir()); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		e, err := enrollment.Create(conn, "court-a", tpm.EKRSA2048, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(e)
		os.WriteFile(filepath.Join(dir, appliance.EnrollmentFile), data, 0o644)
		a, err := appliance.Init(dir, conn, spec.PCRs(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		updateKey, updatePublic, _ := escrow.NewUpdateKey("authority")
		verifier, approvalKey, err := escrow.ParseUpdatePublic(updatePublic)
		if err != nil || approvalKey == nil {
			t.Fatalf("update key: %v", err)
		}
		_, bundles, err := escrow.Ceremony("2026-11", 2, oldPolicy.PCRs,
			[]escrow.Member{{ID: "court-a", EK: a.EK, ImportKey: a.ImportKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
			escrow.WithMode(escrow.ModeShare), escrow.WithUpdateKey(verifier, approvalKey))
		if err != nil {
			t.Fatal(err)
		}
		bundle, _ := bundles[0].Marshal()
		if _, err := a.Provision(conn, bundle, time.Now()); err != nil {
			t.Fatal(err)
		}
		_, scoped, err := escrow.Ceremony("2026-12", 2, oldPolicy.PCRs,
			[]escrow.Member{{ID: "court-a", EK: a.EK, ImportKey: a.ImportKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
			escrow.WithMode(escrow.ModeScoped), escrow.WithUpdateKey(verifier, approvalKey))
		if err != nil {
			t.Fatal(err)
		}
		bundle, _ = scoped[0].Marshal()
		if _, err := a.Provision(conn, bundle, time.Now()); err != nil {
			t.Fatal(err)
		}

		checkReady(t, dir, oldPolicy, 3)
		checkNotReady(t, dir, newPolicy)
		checkPending(t, dir, 0)

		forgerKey, _, _ := escrow.NewUpdateKey("authority")
		forged, _ := escrow.SignUpdate(forgerKey, newPolicy)
		size := a.Ledger.Size()
		if _, err := a.Reseal(conn, forged, time.Now()); !errors.Is(err, escrow.ErrBadUpdate) {
			t.Fatalf("forged update: %v", err)
		}
		last, _ := a.Ledger.Entry(a.Ledger.Size() - 1)
		if a.Ledger.Size() != size+1 || !containsAll(string(last), "kind reseal", "outcome refused", "reason update-refused") {
			t.Fatalf("the forged update was not logged as refused: %q", last)
		}

		update, _ := escrow.SignUpdate(updateKey, newPolicy)
		if _, err := a.Reseal(conn, update, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := a.FinishReseal(conn, time.Now()); err == nil {
			t.Fatal("promoted resealed files on the old image")
		}
		a.Close()
		// update apply may now write the new image, and only that one;
		// the old image still opens everything until the new one promotes.
		checkReady(t, dir, newPolicy, 3)
		checkReady(t, dir, oldPolicy, 3)
		otherPolicy, _ := spec.Predict(measuretest.Root("v3"), nil)
		checkNotReady(t, dir, otherPolicy)
		checkPending(t, dir, 3)

		target.Swtpm.PowerCycle(t, conn)
		if _, err := measure.Boot(conn, spec, measuretest.Root("v2"), t.TempDir()); err != nil {
			t.Fatal(err)
		}
		a, err = appliance.Open(dir, conn)
		if err != nil {
			t.Fatal(err)
		}
		if a.SignerErr == nil {
			t.Fatal("the old checkpoint key opened on the new image")
		}
		promoted, err := a.FinishReseal(conn, time.Now())
		if err != nil || len(promoted) != 3 {
			t.Fatalf("promoted %v: %v", promoted, err)
		}
		// update commit may run; the old image is retired.
		checkPending(t, dir, 0)
		checkReady(t, dir, newPolicy, 3)
		checkNotReady(t, dir, oldPolicy)
		a.Close()
		a, err = appliance.Open(dir, conn)
		if err != nil || a.SignerErr != nil {
			t.Fatalf("after promotion: %v, signer %v", err, a.SignerErr)
		}
		defer a.Close()
		// The same seed under a new policy: the TPM's anchor still names it.
		if err := a.Ledger.Blocked(); err != nil {
			t.Fatalf("blocked after promotion: %v", err)
		}
		for _, keyID := range []string{"2026-11", "2026-12"} {
			b, err := a.Bundle(keyID)
			if err != nil {
				t.Fatal(err)
			}
			if err := escrow.Provision(conn, b, "court-a", a.ImportKey); err != nil {
				t.Fatalf("%s does not work on the new image: %v", keyID, err)
			}
		}
		if _, err := a.Ledger.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if err := a.Ledger.Verify(); err != nil {
			t.Fatal(err)
		}
	})
}

func checkReady(t *testing.T, dir string, p *bootpolicy.Policy, want int) {
	t.Helper()
	if n, err := appliance.ReadyFor(dir, p.PCRs, p.SecurityVersion); err != nil || n != want {
		t.Fatalf("ReadyFor: %d sealed files, %v; want %d and no error", n, err, want)
	}
}

// checkNotReady expects ReadyFor to refuse p, naming the first share (its
// bundles are checked before the checkpoint key).
func checkNotReady(t *testing.T, dir string, p *bootpolicy.Policy) {
	t.Helper()
	_, err := appliance.ReadyFor(dir, p.PCRs, p.SecurityVersion)
	if !errors.Is(err, appliance.ErrNotResealed) || !strings.Contains(err.Error(), "key ID 2026-") {
		t.Fatalf("ReadyFor an image nothing is resealed to: %v", err)
	}
}

func checkPending(t *testing.T, dir string, want int) {
	t.Helper()
	if pending, err := appliance.Pending(dir); err != nil || len(pending) != want {
		t.Fatalf("Pending: %v, %v; want %d", pending, err, want)
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
