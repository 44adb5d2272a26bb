package release

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// The daemon has one TPM connection, and SerialTPM serialises commands,
// not operations: an attestation (create the attestation key, quote,
// flush) and a release's TPM work (sessions, import, load, unseal or
// partials, flush) each hold TPM slots across several commands, and the
// TPM has three transient object slots and three session slots (the
// SLB9670, swtpm and the kernel's resource manager alike). If they
// overlapped, anyone on the network who may ask for an attestation could
// make an approved release fail after its ledger entry — nothing
// released, and the warrant spent.
//
// tpmGate orders them: an operation holds it from its first command to
// its last. A release waits for it; an attestation only tries it, and is
// refused (attest_busy) while another attestation holds it or while a
// warrant awaits its press or is being released, so a pressed release
// waits at most for one attestation that had already started.
type tpmGate struct {
	mu sync.Mutex
}

// release takes the gate for a release's TPM work; the caller unlocks.
func (g *tpmGate) release() (unlock func()) {
	g.mu.Lock()
	return g.mu.Unlock
}

// The room a release needs in the TPM: a scoped release loads two keys
// (tpm.Partials) in a salted session plus a proof session; a share
// release one object in one session.
const (
	releaseObjects  = 2
	releaseSessions = 2
)

// errNoRoom refuses a release, before its entry, on a TPM whose slots
// something else holds: a process that died mid-operation on a TPM without
// a resource manager, or another program using the same TPM.
var errNoRoom = errors.New("the TPM has no room for the release")

// roomRefusal is the code of a checkRoom error: tpm_full only for a count
// of free slots too low; a TPM that could not give the count failed
// (internal).
func roomRefusal(err error) Code {
	if errors.Is(err, errNoRoom) {
		return CodeTPMFull
	}
	return CodeInternal
}

// checkRoom makes sure the release's TPM work will find its slots: the
// release entry spends the warrant, so a release that can already see it
// would fail afterwards must not write it.
func checkRoom(t transport.TPM) error {
	// One command: both counts are in the TPM_PT_VAR group, sessions
	// (TPM_PT_HR_LOADED_AVAIL) three properties before transient objects
	// (TPM_PT_HR_TRANSIENT_AVAIL).
	free, err := tpmProperties(t, tpm2.TPMPTHRLoadedAvail, tpm2.TPMPTHRTransientAvail)
	if err != nil {
		return fmt.Errorf("asking the TPM for its free object and session slots: %w", err)
	}
	for _, need := range []struct {
		what string
		pt   tpm2.TPMPT
		n    uint32
	}{
		{"transient object", tpm2.TPMPTHRTransientAvail, releaseObjects},
		{"session", tpm2.TPMPTHRLoadedAvail, releaseSessions},
	} {
		if free[need.pt] < need.n {
			return fmt.Errorf("%w: %d free %s slot(s), %d needed; another program holds the TPM's slots, or a process died while it held them",
				errNoRoom, free[need.pt], need.what, need.n)
		}
	}
	return nil
}

// tpmProperties reads the TPM properties want (TPM_PT values of one
// group) with one TPM2_GetCapability over the range they span. A TPM may
// answer with fewer properties than asked (TPM 2.0 Part 3,
// GetCapability: moreData): one of want missing is asked for alone, and
// one the TPM does not report then is an error.
func tpmProperties(t transport.TPM, want ...tpm2.TPMPT) (map[tpm2.TPMPT]uint32, error) {
	first, last := slices.Min(want), slices.Max(want)
	got, err := getProperties(t, first, uint32(last-first)+1)
	if err != nil {
		return nil, err
	}
	for _, pt := range want {
		if _, ok := got[pt]; ok {
			continue
		}
		alone, err := getProperties(t, pt, 1)
		if err != nil {
			return nil, err
		}
		v, ok := alone[pt]
		if !ok {
			return nil, errors.New("the TPM does not report how many slots it has free")
		}
		got[pt] = v
	}
	return got, nil
}

// getProperties runs one TPM2_GetCapability for count TPM properties from
// first on, and returns those the TPM reported.
func getProperties(t transport.TPM, first tpm2.TPMPT, count uint32) (map[tpm2.TPMPT]uint32, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(first), PropertyCount: count}.Execute(t)
	var rc tpm2.TPMRC
	var f1 tpm2.TPMFmt1Error
	switch {
	case err == nil:
	case errors.As(err, &rc), errors.As(err, &f1):
		return nil, err // the TPM's own refusal, by its code
	default: // the transport, or an answer that does not decode
		return nil, errors.New("the TPM's answer about its properties is damaged or did not arrive")
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return nil, errors.New("the TPM's answer about its properties is damaged")
	}
	got := make(map[tpm2.TPMPT]uint32, len(props.TPMProperty))
	for _, p := range props.TPMProperty {
		got[p.Property] = p.Value
	}
	return got, nil
}

var errAttestBusy = errors.New("the TPM is busy (a release, or another attestation); try again in a moment")

// attestAlone runs f, an attestation, holding the TPM gate, or refuses
// with attest_busy (counted, not logged: anyone can cause it) when the
// gate is taken or a warrant awaits its press or is being released. An
// error from f goes to the log; the caller gets attest_failed without the
// TPM's details.
func (d *Daemon) attestAlone(f func() (any, error)) (any, error) {
	d.mu.Lock()
	pending := d.pending != nil
	d.mu.Unlock()
	if pending || !d.gate.mu.TryLock() {
		return nil, d.count(CodeAttestBusy, errAttestBusy)
	}
	out, err := f()
	d.gate.mu.Unlock()
	if err != nil {
		d.tally.add(CodeAttestFailed)
		d.cfg.Log.Warn("attestation failed", "err", err)
		return nil, refusal(CodeAttestFailed, "the appliance could not make an attestation; try again, and tell its operator if it persists")
	}
	return out, nil
}
