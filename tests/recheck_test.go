package tests

import (
	"bytes"
	"context"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// TestInvariantVerificationRunsAgainRightBeforeTheFirstReleaseEntry: a
// warrant that verified at submission and stopped verifying while the
// device waited for the press — used by another path, its window closed,
// its judge revoked by a fresh CRL, its key ID's bundle replaced by one
// that does not open — is refused after the press with
// changed_after_approval and the cause, logged as its own refusal entry,
// and releases nothing.
func TestInvariantVerificationRunsAgainRightBeforeTheFirstReleaseEntry(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())

	t.Run("released by another path meanwhile", func(t *testing.T) {
		p7s := r.warrant(t, "W-twice", "court-a")
		r.pressAfter(t, p7s, func() { r.releaseElsewhere(t, p7s) }, release.CodeReplayed)
	})
	t.Run("window closed during the wait", func(t *testing.T) {
		now := r.now().UTC()
		w := draftWarrant("W-closing", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
		w.NotAfter = now.Add(2 * time.Minute).Format(time.RFC3339)
		p7s := r.court.signDocument(t, w, time.Now())
		r.pressAfter(t, p7s, func() { r.skew.Add(int64(3 * time.Minute)) }, release.Code(warrant.ReasonExpired))
	})
	t.Run("judge revoked during the wait", func(t *testing.T) {
		p7s := r.court.sign(t, "W-revoked", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, r.now().UTC())
		r.pressAfter(t, p7s, func() { r.court.install(t, r.a, r.now().UTC(), r.court.judge) }, release.Code(warrant.ReasonRevoked))
		r.court.install(t, r.a, r.now().UTC()) // for what follows
	})
	// The bundle is read again after the press: one sealed to PCRs the
	// summary's did not name replaced it, which does not open, or which
	// does — and is the one released.
	path := filepath.Join(r.a.Dir, appliance.BundleDir, "2026-11.json")
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	replace := func(t *testing.T, pcrs tpm.PCRValues) *escrow.Public {
		t.Helper()
		pub, bundles, err := escrow.Ceremony("2026-11", 2, pcrs, []escrow.Member{
			{ID: r.a.ID, EK: r.a.EK, ImportKey: r.a.ImportKey}, {ID: "court-z", EK: tpmtest.RandomEK(t), ImportKey: tpmtest.RandomImportKey(t)}}, escrow.WithMode(escrow.ModeShare))
		if err != nil {
			t.Fatal(err)
		}
		data, err := bundles[0].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return pub
	}
	t.Run("bundle replaced during the wait", func(t *testing.T) {
		defer os.WriteFile(path, old, 0o600)
		p7s := r.court.sign(t, "W-bundle", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, r.now().UTC())
		r.pressAfter(t, p7s, func() { replace(t, tpm.PCRValues{7: bytes.Repeat([]byte{7}, 32)}) }, release.CodePCRMismatch)
	})
	t.Run("bundle replaced by one that opens during the wait", func(t *testing.T) {
		defer os.WriteFile(path, old, 0o600)
		p7s := r.court.sign(t, "W-bundle-opens", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, r.now().UTC())
		var pub *escrow.Public
		st, pkg := r.releaseOKAfter(t, p7s, func() {
			// PCR 7, which the summary's bundle does not name, holds a
			// measurement too.
			if err := tpm.ExtendPCR(r.tpm, 7, bytes.Repeat([]byte{7}, 32)); err != nil {
				t.Fatal(err)
			}
			pcrs, err := tpm.ReadPCRs(r.tpm, 7, 8)
			if err != nil {
				t.Fatal(err)
			}
			pub = replace(t, pcrs)
		})
		digest, _ := hex.DecodeString(st.WarrantDigest)
		share, err := r.agency.Open(escrow.ShareInfo(digest, "court-a", "2026-11", pkg.Index), pkg.SealedShare)
		if err != nil {
			t.Fatal(err)
		}
		if !pub.VerifyShare(pkg.Index, share) || r.escrow.VerifyShare(pkg.Index, share) {
			t.Fatal("the share released is not the replacing bundle's")
		}
	})
}

// TestInvariantShareMustStillOpenAfterThePress: the TPM's state is read
// again after the press — the PCRs and the version floor, which only go
// up (each case has its own device) — and a share that would no longer
// open is refused with changed_after_approval and the cause, before any
// release entry.
func TestInvariantShareMustStillOpenAfterThePress(t *testing.T) {
	for _, tc := range []struct {
		name      string
		meanwhile func(t *testing.T, r *rig)
		cause     release.Code
	}{
		{"PCRs extended during the wait", func(t *testing.T, r *rig) { measure(t, r.tpm, "another image") }, release.CodePCRMismatch},
		{"floor raised during the wait", func(t *testing.T, r *rig) {
			b, err := r.a.Bundle("2026-11")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tpm.RaiseFloor(r.tpm, b.Escrow.SecurityVersion+1); err != nil {
				t.Fatal(err)
			}
		}, release.CodeDowngrade},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			defer r.stop()
			r.court.install(t, r.a, time.Now().UTC())
			r.pressAfter(t, r.warrant(t, "W-opens", "court-a"), func() { tc.meanwhile(t, r) }, tc.cause)
		})
	}
}

// pressAfter submits p7s, runs meanwhile while the device waits for the
// press, presses, and checks the refusal: changed_after_approval with
// cause, one refusal entry, no release entry, nothing left.
func (r *rig) pressAfter(t *testing.T, p7s []byte, meanwhile func(), cause release.Code) {
	t.Helper()
	status, st, eb := r.c.submit(t, p7s)
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	meanwhile()
	size, releasesBefore := r.a.Ledger.Size(), r.releaseEntries(t)
	r.press()
	st = r.c.wait(t, st.ID)
	if st.State != release.StateRefused || st.Code != release.CodeChangedAfterApproval || st.Cause != cause {
		t.Fatalf("want changed_after_approval (%s), got %+v", cause, st)
	}
	if r.a.Ledger.Size() != size+1 || r.releaseEntries(t) != releasesBefore {
		t.Fatalf("ledger grew from %d to %d (release entries %d → %d); want one refusal entry", size, r.a.Ledger.Size(), releasesBefore, r.releaseEntries(t))
	}
	index := st.LedgerIndices[""]
	e := r.c.entryAt(t, index, r.a.VerifierKey)
	salt, err := r.a.Ledger.Salt(index)
	if err != nil || e.Kind != ledger.KindRefusal || e.Reason != string(release.CodeChangedAfterApproval) || !bytes.Equal(ledger.Commit(salt, p7s), e.Commitment) {
		t.Fatalf("logged as %+v (%v)", e, err)
	}
	if pkgs := requestLeft(t, r.a, st.ID); len(pkgs) != 0 {
		t.Fatalf("the refused request left %v", pkgs)
	}
}

// releaseEntries counts the ledger's release entries.
func (r *rig) releaseEntries(t testing.TB) int {
	t.Helper()
	n := 0
	for i := int64(0); i < r.a.Ledger.Size(); i++ {
		data, err := r.a.Ledger.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		if e, _ := ledger.ParseEntry(data); e != nil && e.Kind == ledger.KindRelease {
			n++
		}
	}
	return n
}

// releaseElsewhere releases p7s through a second daemon on the same
// appliance, with its own button: another path to the same ledger.
func (r *rig) releaseElsewhere(t testing.TB, p7s []byte) {
	t.Helper()
	pin := &gpiotest.Pin{N: "GPIO22", Num: 22, EdgesChan: make(chan gpio.Level, 16)}
	btn, err := button.NewGPIO(pin)
	if err != nil {
		t.Fatal(err)
	}
	other, err := release.New(release.Config{Appliance: r.a, TPM: r.tpm, Button: btn, Window: 5 * time.Second, Now: r.now})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	st, err := other.Submit(p7s)
	if err != nil {
		t.Fatalf("the other path: %v", err)
	}
	pin.EdgesChan <- gpio.Low
	time.Sleep(60 * time.Millisecond)
	pin.EdgesChan <- gpio.High
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done, err := other.Wait(ctx, st.ID)
	if err != nil || done.State != release.StateReleased {
		t.Fatalf("the other path did not release: %v %+v", err, done)
	}
	if _, err := other.Package(st.ID, "2026-11"); err != nil {
		t.Fatalf("the other path's package: %v", err)
	}
}
