package release

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/custodian-project/custodian/hsm/warrant"
)

// A release entry spends its warrant. When the witnesses answered right
// before the entry (witnessesAnswer) and then did not cosign a checkpoint
// holding it, the key ID is neither failed nor released: the request
// awaits its witnesses (StateAwaitingWitnesses) under that entry, holding
// nothing unsealed, and the officer asks the device to try again
// (Resume) once they answer. A try runs again every check a later key
// ID's entry gets (recheckKeyID: the appliance's state, the warrant
// against the trust store read again, its replay key registered by the
// request's own first entry, the PCRs and floor) and the TPM's room, then
// waits for the witnesses again, and only then unseals: at most once, as
// one request runs at a time and its package is created once. A try
// that finds a cause fixed without a restart (canPark: a stale CRL, the
// clock behind) or the TPM without room parks the request again under
// that code; any other failed check ends the key ID. The request
// record stays unfinished meanwhile, so a restart ends it: the
// key ID is logged as failed (interrupted), nothing is released.

// StateAwaitingWitnesses: a key ID's release entry is in the ledger, its
// witnesses did not cosign it in time, nothing was unsealed; the request
// can be tried again (POST /v1/requests/{id}/resume).
const StateAwaitingWitnesses = "awaiting_witnesses"

// park leaves the request awaiting its witnesses at position pos of its
// key IDs, whose release entry is index, and frees the approval slot.
func (d *Daemon) park(r *request, rec *record, pos int, index int64, code Code, cause error) {
	if err := d.writeRecord(rec); err != nil {
		d.cfg.Log.Error("request record not updated", "request", rec.ID, "err", err)
	}
	r.rec, r.resumeAt, r.parked = rec, pos, index
	msg := ParkedMessage(code, rec.ID, cause)
	fmt.Fprintf(d.cfg.Display, "request %s: waiting, %s (key ID %s)\n", rec.ID[:8], code, rec.KeyIDs[pos])
	d.cfg.Log.Warn("release awaits its witnesses", "request", rec.ID, "key_id", rec.KeyIDs[pos], "code", code, "err", cause)
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &r.status
	s.State, s.Code, s.Message = StateAwaitingWitnesses, code, msg
	s.Packages = append([]string(nil), rec.Packages...)
	s.LedgerIndices = maps.Clone(rec.LedgerIndices)
	if len(rec.Failed) > 0 {
		s.Failed = maps.Clone(rec.Failed)
	}
	if d.pending == r {
		d.pending = nil
	}
}

// errNoParked refuses a resume of an ID that no request awaiting its
// witnesses holds.
var errNoParked = &Refusal{Code: CodeNotFound, Err: errors.New("no request awaits its witnesses under this ID: check the ID the release command printed"), LedgerIndex: -1}

// errNotParked is errNoParked where officers' certificates are checked:
// the same answer for an unknown ID and for another officer's request, so
// that neither tells which IDs exist.
var errNotParked = &Refusal{Code: CodeNotFound, Err: errors.New("no request of yours awaits its witnesses under this ID: check the ID the release command printed, and that this is the certificate that submitted the warrant"), LedgerIndex: -1}

// ParkedFix says, for the code a request awaiting its witnesses parked
// on, what is fixed before the officer tries again; "" for a code that
// never parks one. Besides the witness timeout and a TPM without room (or
// one that could not count its slots),
// only causes that the custodian's operator fixes without a restart, and
// that say nothing against the warrant or the device, park a request
// again (canPark): a stale CRL (the next try checks revocation against
// the fresh one) and a clock behind the ledger's (the next try checks the
// warrant's window against the clock set).
func ParkedFix(code Code) string {
	switch code {
	case CodeWitnessTimeout:
		return "its witnesses did not cosign the release entry in time: wait until the custodian's operator says they answer"
	case CodeTPMFull:
		return "the TPM has no room for the release: wait until the custodian's operator says its slots are free"
	case CodeInternal:
		return "the TPM could not say whether it has room for the release: wait until the custodian's operator says it answers"
	case Code(warrant.ReasonCRLStale):
		return "the court's revocation list on the custodian is out of date: wait until the trust admin installs a fresh one"
	case CodeClockBehind:
		return "the custodian's clock is behind its ledger: wait until the operator sets the clock"
	}
	return ""
}

// canPark reports whether a key ID whose checks failed with code at a
// try waits again rather than failing for good. Revoked, expired, not
// addressed, a floor or PCR change, a downgrade, an image not approved
// or a blocked ledger (only a restart clears those two, and a restart
// ends the request) end the key ID with a failure entry.
func canPark(code Code) bool {
	return code == Code(warrant.ReasonCRLStale) || code == CodeClockBehind
}

// ParkedMessage is the status message of a request awaiting its
// witnesses on code: first what to wait for and the command to run then,
// and never a restart (it ends the request and spends the warrant).
func ParkedMessage(code Code, id string, cause error) string {
	return fmt.Sprintf("%s, then run custodian release --resume %s; do not restart the custodian meanwhile, which ends the request and spends the warrant; the release entry stands and nothing was unsealed (%v)",
		ParkedFix(code), id, cause)
}

// Resume tries again a request awaiting its witnesses, in the
// background like a press; Wait follows it. It refuses (not_found) a
// request that does not await them, and, as a submission would, while
// another warrant awaits approval or the daemon stops.
func (d *Daemon) Resume(id string) (*Status, error) {
	d.mu.Lock()
	r, ok := d.requests[id]
	switch {
	case !ValidID(id) || !ok || r.status.State != StateAwaitingWitnesses:
		d.mu.Unlock()
		return nil, errNoParked
	case d.closed:
		d.mu.Unlock()
		return nil, d.count(CodeShuttingDown, errShuttingDown)
	case d.pending != nil:
		d.mu.Unlock()
		return nil, d.count(CodeBusy, errBusy)
	}
	d.pending = r
	r.status.State, r.status.Code, r.status.Message = StateReleasing, "", ""
	r.done = make(chan struct{})
	d.wg.Add(1)
	d.mu.Unlock()
	go d.resume(r, r.done)
	st := d.snapshot(r)
	return &st, nil
}

// resume runs the parked key ID's checks, its witness wait and release,
// then the request's remaining key IDs.
func (d *Daemon) resume(r *request, done chan struct{}) {
	defer d.wg.Done()
	defer close(done)
	unlock := d.gate.release()
	defer unlock()
	start, cmds := time.Now(), d.cfg.TPM.Commands()
	rec, pos, index := r.rec, r.resumeAt, r.parked
	k := rec.KeyIDs[pos]
	cause, err := d.recheckKeyID(r, k, *rec.FirstEntry)
	if err != nil && canPark(cause) {
		d.park(r, rec, pos, index, cause, err)
		return
	}
	if err == nil {
		if err = checkRoom(d.cfg.TPM); err != nil {
			d.park(r, rec, pos, index, roomRefusal(err), err)
			return
		}
		var code Code
		code, err = d.afterEntry(r, rec, r.bundles[k], index, r.status.Timings)
		switch {
		case errors.Is(err, errAwaitingWitnesses):
			d.park(r, rec, pos, index, code, err)
			return
		case err != nil:
			rec.Failed[k] = code
		}
	} else {
		// After its entry: a failure entry, with the cause as for a later
		// key ID refused before its entry.
		d.logFailure(r.p7s, rec, k, CodeChangedAfterApproval)
		rec.Failed[k] = CodeChangedAfterApproval
		if rec.Causes == nil {
			rec.Causes = map[string]Code{}
		}
		rec.Causes[k] = cause
	}
	if err != nil {
		d.cfg.Log.Error("release failed", "request", rec.ID, "key_id", k, "code", rec.Failed[k], "err", err)
	}
	d.releaseFrom(r, rec, pos+1, nil, start, cmds)
}
