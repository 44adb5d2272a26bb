package appliance_test

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantNoDowngradeSharesAndKeysOpenOnlyAboveTheFloor: no
// downgrade: shares and keys open only while the TPM's version floor
// allows their image; the floor only rises. A device on image v1 follows
// an approved update to v2 and raises its floor there; booted into the v1
// measurements again, with the v1 share, scoped key and checkpoint key
// restored beside it, nothing opens, each with a downgrade error naming
// both versions. v2 still opens. The operator cannot raise the floor
// above the running image, nor lower it, and an update signed back to v1
// is refused.
func TestInvariantNoDowngradeSharesAndKeysOpenOnlyAboveTheFloor(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		v1, v2 := measure.DefaultSpec(), measure.DefaultSpec()
		v2.SecurityVersion = 2
		oldPolicy, _ := v1.Predict(measuretest.Root("v1"), nil)
		newPolicy, _ := v2.Predict(measuretest.Root("v2"), nil)
		if oldPolicy.SecurityVersion != 1 || newPolicy.SecurityVersion != 2 {
			t.Fatalf("predicted versions %d, %d", oldPolicy.SecurityVersion, newPolicy.SecurityVersion)
		}
		bootInto(t, conn, v1, "v1")
		dir := t.TempDir()
		a := enrolledAppliance(t, conn, dir)
		updateKey, updatePublic, _ := escrow.NewUpdateKey("authority")
		verifier, approvalKey, _ := escrow.ParseUpdatePublic(updatePublic)
		old := map[string]*escrow.Bundle{}
		for keyID, mode := range map[string]string{"2026-11": escrow.ModeShare, "2026-12": escrow.ModeScoped} {
			_, bundles, err := escrow.Ceremony(keyID, 2, oldPolicy.PCRs,
				[]escrow.Member{{ID: "court-a", EK: a.EK, ImportKey: a.ImportKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
				escrow.WithMode(mode), escrow.WithUpdateKey(verifier, approvalKey), escrow.WithSecurityVersion(1))
			if err != nil {
				t.Fatal(err)
			}
			data, _ := bundles[0].Marshal()
			if _, err := a.Provision(conn, data, time.Now()); err != nil {
				t.Fatal(err)
			}
			old[keyID] = bundles[0]
		}
		oldLedgerKey, err := os.ReadFile(filepath.Join(dir, appliance.LedgerKeyBlob))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := a.RaiseFloor(conn, 2, time.Now()); !errors.Is(err, appliance.ErrFloorAboveImage) {
			t.Fatalf("raising to 2 on image 1: %v", err)
		}
		wantLastEntry(t, a, "kind floor", "outcome refused", "reason floor-above-image")

		update, _ := escrow.SignUpdate(updateKey, newPolicy)
		if _, err := a.Reseal(conn, update, time.Now()); err != nil {
			t.Fatal(err)
		}
		a.Close()
		target.Swtpm.PowerCycle(t, conn)
		bootInto(t, conn, v2, "v2")
		a = openAppliance(t, conn, dir)
		if _, err := a.FinishReseal(conn, time.Now()); err != nil {
			t.Fatal(err)
		}
		from, to, err := a.RaiseFloor(conn, 0, time.Now())
		if err != nil || from != 1 || to != 2 {
			t.Fatalf("raising on image 2: %d → %d, %v", from, to, err)
		}
		wantLastEntry(t, a, "kind floor", "outcome ok")
		if _, _, err := a.RaiseFloor(conn, 1, time.Now()); !errors.Is(err, appliance.ErrFloorLower) {
			t.Fatalf("lowering to 1: %v", err)
		}
		wantLastEntry(t, a, "kind floor", "outcome refused", "reason floor-lower")
		if floor, _ := tpm.ReadFloor(conn); floor != 2 {
			t.Fatalf("floor %d after a refused lowering", floor)
		}
		back, _ := escrow.SignUpdate(updateKey, oldPolicy)
		if _, err := a.Reseal(conn, back, time.Now()); !errors.Is(err, escrow.ErrOlderUpdate) {
			t.Fatalf("an approved update back to image 1: %v", err)
		}
		wantLastEntry(t, a, "kind reseal", "outcome refused", "reason update-refused")
		a.Close()

		// An attacker boots the old image, with the old files restored.
		target.Swtpm.PowerCycle(t, conn)
		bootInto(t, conn, v1, "v1")
		blob, _ := tpm.ParseBlob(old["2026-11"].Blob)
		_, err = tpm.Unseal(conn, blob)
		wantDowngrade(t, "the v1 share", err)
		key, _ := tpm.ParseScopedKey(old["2026-12"].Blob)
		_, err = tpm.Partials(conn, key, [][]byte{randomPoint(t)}, nil)
		wantDowngrade(t, "the v1 scoped key", err)
		ledgerKey, _ := tpm.ParseBlob(oldLedgerKey)
		_, err = tpm.Unseal(conn, ledgerKey)
		wantDowngrade(t, "the v1 checkpoint key", err)

		target.Swtpm.PowerCycle(t, conn)
		bootInto(t, conn, v2, "v2")
		a = openAppliance(t, conn, dir)
		defer a.Close()
		if a.SignerErr != nil {
			t.Fatalf("the checkpoint key on image 2: %v", a.SignerErr)
		}
		if err := a.Ledger.Blocked(); err != nil {
			t.Fatalf("blocked on image 2 after the floor rose: %v", err)
		}
		for _, keyID := range []string{"2026-11", "2026-12"} {
			b, _ := a.Bundle(keyID)
			if err := escrow.Provision(conn, b, "court-a", a.ImportKey); err != nil {
				t.Fatalf("%s on image 2: %v", keyID, err)
			}
		}
		status, err := a.FloorStatus(conn)
		if err != nil || status.Floor != 2 || status.LedgerKey != 2 || status.Bundles["2026-11"] != 2 || status.Bundles["2026-12"] != 2 {
			t.Fatalf("status %+v, %v", status, err)
		}
	})
}

// TestRaiseFloorResealsTheCheckpointKeyOfTheSameImage: ledger init seals
// the checkpoint key at the floor of the day; on a device whose shares
// were sealed for a higher version of the same image, raising the floor
// seals the key again for it, so it keeps opening. Without a share, no
// one vouches for the image's version, and the floor stays.
func TestRaiseFloorResealsTheCheckpointKeyOfTheSameImage(t *testing.T) {
	tpmtest.RunSwtpm(t, func(t *testing.T, target tpmtest.Target) {
		conn := target.Open(t)
		v3 := measure.DefaultSpec()
		v3.SecurityVersion = 3
		policy, _ := v3.Predict(measuretest.Root("v3"), nil)
		bootInto(t, conn, v3, "v3")
		a := enrolledAppliance(t, conn, t.TempDir())
		defer a.Close()
		if _, _, err := a.RaiseFloor(conn, 0, time.Now()); !errors.Is(err, appliance.ErrFloorNotOpen) {
			t.Fatalf("raising with no share to vouch for the image: %v", err)
		}
		wantLastEntry(t, a, "kind floor", "outcome refused", "reason floor-not-open")
		_, bundles, err := escrow.Ceremony("2026-11", 2, policy.PCRs,
			[]escrow.Member{{ID: "court-a", EK: a.EK, ImportKey: a.ImportKey}, {ID: "court-b", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}},
			escrow.WithMode(escrow.ModeShare), escrow.WithSecurityVersion(3))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := bundles[0].Marshal()
		if _, err := a.Provision(conn, data, time.Now()); err != nil {
			t.Fatal(err)
		}
		if from, to, err := a.RaiseFloor(conn, 0, time.Now()); err != nil || from != 1 || to != 3 {
			t.Fatalf("raising: %d → %d, %v", from, to, err)
		}
		status, err := a.FloorStatus(conn)
		if err != nil || status.LedgerKey != 3 {
			t.Fatalf("status %+v, %v", status, err)
		}
		if _, err := a.Ledger.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		// The resealed key is the same seed: the TPM's anchor still names it.
		dir, verifier := a.Dir, a.VerifierKey
		a.Close()
		a = openAppliance(t, conn, dir)
		defer a.Close()
		if err := a.Ledger.Blocked(); err != nil || a.VerifierKey != verifier {
			t.Fatalf("after raising the floor: blocked %v, key changed %v", err, a.VerifierKey != verifier)
		}
	})
}

func bootInto(t *testing.T, conn transport.TPM, spec measure.Spec, root string) {
	t.Helper()
	if _, err := measure.Boot(conn, spec, measuretest.Root(root), t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

func enrolledAppliance(t *testing.T, conn transport.TPM, dir string) *appliance.Appliance {
	t.Helper()
	e, err := enrollment.Create(conn, "court-a", tpm.EKRSA2048, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(e)
	os.WriteFile(filepath.Join(dir, appliance.EnrollmentFile), data, 0o644)
	a, err := appliance.Init(dir, conn, measure.DefaultSpec().PCRs(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func openAppliance(t *testing.T, conn transport.TPM, dir string) *appliance.Appliance {
	t.Helper()
	a, err := appliance.Open(dir, conn)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wantLastEntry(t *testing.T, a *appliance.Appliance, parts ...string) {
	t.Helper()
	last, err := a.Ledger.Entry(a.Ledger.Size() - 1)
	if err != nil || !containsAll(string(last), parts...) {
		t.Fatalf("last entry %q (%v), want %q", last, err, parts)
	}
}

func wantDowngrade(t *testing.T, what string, err error) {
	t.Helper()
	var d *tpm.DowngradeError
	if !errors.As(err, &d) || d.Version != 1 || d.Floor != 2 {
		t.Fatalf("%s on image 1 under floor 2: %v, want a downgrade error", what, err)
	}
}

// randomPoint is an envelope's ephemeral point, as a partial takes it.
func randomPoint(t *testing.T) []byte {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}
