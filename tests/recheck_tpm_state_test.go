package tests

import (
	be "encoding/binary"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// slotsAsked passes commands to the TPM and closes asked once the TPM has
// answered, after arm, a TPM2_GetCapability for the free session slots
// (TPM_PT_HR_LOADED_AVAIL): the last question the release asks of the
// TPM's state before its first entry.
type slotsAsked struct {
	transport.TPM
	armed atomic.Bool
	once  sync.Once
	asked chan struct{}
}

func (s *slotsAsked) Send(cmd []byte) ([]byte, error) {
	rsp, err := s.TPM.Send(cmd)
	if first, ok := tpmtest.PropertiesAsked(cmd); s.armed.Load() && ok && first == tpm2.TPMPTHRLoadedAvail {
		s.once.Do(func() { close(s.asked) })
	}
	return rsp, err
}

// TestInvariantTPMStateChangedWhileTheWarrantVerifiesAgainIsSeen: after
// the press the warrant verifies again, and the TPM's state (PCRs, floor,
// free slots) that decides whether the release can succeed must be the
// state after that verification, not before it. Here the state changes
// while the warrant verifies again (at the daemon's first clock reading of
// the recheck, once the TPM was asked for its free slots, or after a
// second when it is not asked first): a PCR extended, the floor raised,
// the session slots taken. The release must be refused before any release
// entry (changed_after_approval with the cause, or tpm_full), as it is
// when the change comes before the press — not write the entry that
// spends the warrant and then fail in the TPM.
func TestInvariantTPMStateChangedWhileTheWarrantVerifiesAgainIsSeen(t *testing.T) {
	for _, tc := range []struct {
		name      string
		meanwhile func(t *testing.T, r *rig) (undo func())
		code      release.Code
		cause     release.Code
	}{
		{"PCRs extended", func(t *testing.T, r *rig) func() {
			measure(t, r.tpm, "another image")
			return func() {}
		}, release.CodeChangedAfterApproval, release.CodePCRMismatch},
		{"floor raised", func(t *testing.T, r *rig) func() {
			b, err := r.a.Bundle("2026-11")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tpm.RaiseFloor(r.tpm, b.Escrow.SecurityVersion+1); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, release.CodeChangedAfterApproval, release.CodeDowngrade},
		{"session slots taken", func(t *testing.T, r *rig) func() {
			// Another program on a TPM without a resource manager.
			var closers []func() error
			for range 3 {
				_, closeSession, err := tpm2.HMACSession(r.tpm, tpm2.TPMAlgSHA256, 16)
				if err != nil {
					break
				}
				closers = append(closers, closeSession)
			}
			return func() {
				for _, c := range closers {
					c()
				}
			}
		}, release.CodeTPMFull, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			watch := &slotsAsked{asked: make(chan struct{})}
			r := newIdleRigVia(t, "court-a", func(conn transport.TPM) transport.TPM { watch.TPM = conn; return watch })
			r.escrow = provisionLocal(t, r.a, r.tpm, "2026-11")
			r.start(t)
			defer r.stop()
			r.court.install(t, r.a, time.Now().UTC())

			p7s := r.warrant(t, "W-during", "court-a")
			status, st, eb := r.c.submit(t, p7s)
			if status != http.StatusAccepted {
				t.Fatalf("submit: %d %+v", status, eb)
			}
			size, releasesBefore := r.a.Ledger.Size(), r.releaseEntries(t)
			// The first clock reading after the press is the recheck's.
			var fired atomic.Bool
			undo := func() {}
			defer func() { undo() }()
			hook := func() {
				if !fired.CompareAndSwap(false, true) {
					return
				}
				select {
				case <-watch.asked:
				case <-time.After(time.Second):
				}
				undo = tc.meanwhile(t, r)
			}
			watch.armed.Store(true)
			r.nowHook.Store(&hook)
			r.press()
			st = r.c.wait(t, st.ID)
			r.nowHook.Store(nil)
			if !fired.Load() {
				t.Fatal("the daemon did not read its clock after the press")
			}
			if st.State != release.StateRefused || st.Code != tc.code || st.Cause != tc.cause {
				t.Errorf("the TPM's state changed while the warrant verified again: want refused %s (%s) before any entry, got state %s code %s (%s): %s",
					tc.code, tc.cause, st.State, st.Code, st.Cause, st.Message)
			}
			if n := r.releaseEntries(t); n != releasesBefore {
				t.Errorf("%d release entries written (ledger %d → %d): the warrant was spent on a release the TPM refused", n-releasesBefore, size, r.a.Ledger.Size())
			}
			// Whatever happened, the release left no session or object.
			undo()
			undo = func() {}
			for _, pt := range []tpm2.TPMPT{tpm2.TPMPTHRLoadedAvail, tpm2.TPMPTHRTransientAvail} {
				rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(pt), PropertyCount: 1}.Execute(r.tpm)
				if err != nil {
					t.Fatal(err)
				}
				props, err := rsp.CapabilityData.Data.TPMProperties()
				if err != nil || len(props.TPMProperty) == 0 || props.TPMProperty[0].Property != pt || props.TPMProperty[0].Value != 3 {
					t.Errorf("after the request, TPM property %#x: %+v %v, want 3 free", uint32(pt), props, err)
				}
			}
		})
	}
}

// slotsUnanswered passes commands to the TPM, but once armed answers a
// TPM2_GetCapability of TPM properties with TPM_RC_FAILURE: the TPM did
// not say how many slots are free.
type slotsUnanswered struct {
	transport.TPM
	armed atomic.Bool
}

func (s *slotsUnanswered) Send(cmd []byte) ([]byte, error) {
	if _, ok := tpmtest.PropertiesAsked(cmd); s.armed.Load() && ok {
		rsp := be.BigEndian.AppendUint16(nil, uint16(tpm2.TPMSTNoSessions))
		rsp = be.BigEndian.AppendUint32(rsp, 10)
		return be.BigEndian.AppendUint32(rsp, uint32(tpm2.TPMRCFailure)), nil
	}
	return s.TPM.Send(cmd)
}

// TestTPMFailingToCountItsSlotsIsNotTPMFull: after the press, a TPM that
// fails the question of its free slots refuses the release before any
// entry — but not as tpm_full, whose advice (a power cycle empties the
// slots) answers slots held elsewhere, not a TPM that does not answer.
func TestTPMFailingToCountItsSlotsIsNotTPMFull(t *testing.T) {
	via := &slotsUnanswered{}
	r := newIdleRigVia(t, "court-a", func(conn transport.TPM) transport.TPM { via.TPM = conn; return via })
	r.escrow = provisionLocal(t, r.a, r.tpm, "2026-11")
	r.start(t)
	defer r.stop()
	r.court.install(t, r.a, time.Now().UTC())
	status, st, eb := r.c.submit(t, r.warrant(t, "W-uncounted", "court-a"))
	if status != http.StatusAccepted {
		t.Fatalf("submit: %d %+v", status, eb)
	}
	releasesBefore := r.releaseEntries(t)
	via.armed.Store(true)
	r.press()
	st = r.c.wait(t, st.ID)
	via.armed.Store(false)
	if st.State != release.StateRefused || r.releaseEntries(t) != releasesBefore {
		t.Fatalf("want a refusal before any entry, got %+v", st)
	}
	if st.Code != release.CodeInternal || strings.Contains(st.Message, "restart the appliance") || strings.Contains(st.Message, "tpm2.") {
		t.Errorf("a TPM that did not answer is refused as %s: %s; want internal, without a restart's advice or the decoder's words", st.Code, st.Message)
	}
}
