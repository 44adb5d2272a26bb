package tests

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// TestInvariantVerificationRunsAgainRightBeforeTheFirstReleaseEntry: a
// warrant that verified at submission and stopped verifying while the
// device waited for the press — used by another path, its window closed,
// its judge revoked by a fresh CRL — is refused after the press with
// changed_after_approval and the cause, logged as its own refusal entry,
// and releases nothing.
func TestInvariantVerificationRunsAgainRightBeforeTheFirstReleaseEntry(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())

	// pressAfter submits p7s, runs meanwhile while the device waits for
	// the press, presses, and checks the refusal.
	pressAfter := func(t *testing.T, p7s []byte, meanwhile func(), cause release.Code) {
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

	t.Run("released by another path meanwhile", func(t *testing.T) {
		p7s := r.warrant(t, "W-twice", "court-a")
		pressAfter(t, p7s, func() { r.releaseElsewhere(t, p7s) }, release.CodeReplayed)
	})
	t.Run("window closed during the wait", func(t *testing.T) {
		now := r.now().UTC()
		w := draftWarrant("W-closing", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
		w.NotAfter = now.Add(2 * time.Minute).Format(time.RFC3339)
		p7s := r.court.signDocument(t, w, time.Now())
		pressAfter(t, p7s, func() { r.skew.Add(int64(3 * time.Minute)) }, release.Code(warrant.ReasonExpired))
	})
	t.Run("judge revoked during the wait", func(t *testing.T) {
		p7s := r.court.sign(t, "W-revoked", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, r.now().UTC())
		pressAfter(t, p7s, func() { r.court.install(t, r.a, r.now().UTC(), r.court.judge) }, release.Code(warrant.ReasonRevoked))
	})
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
