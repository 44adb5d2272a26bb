package release

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/witness"
)

// witnessLoop submits each new checkpoint to the witnesses the held key
// IDs' escrow files name, so that every entry — refusals included — is
// seen outside the appliance, and the served checkpoint carries their
// cosignatures. Each escrow file's own witnesses and quorum are asked for
// separately (their cosignatures add up in one stored checkpoint), so the
// served checkpoint satisfies every held file. Witnesses of a file with
// quorum 0 are submitted every checkpoint too; nothing waits for them. It
// is best effort: a release waits for its own quorum (witnessed); this
// loop only keeps the witnesses up to date.
func (d *Daemon) witnessLoop() {
	defer d.wg.Done()
	tick := time.NewTicker(witnessEvery)
	defer tick.Stop()
	var done int64 // the size last cosigned by every held file's quorum
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-tick.C:
		case <-d.appended:
		}
		l := d.cfg.Appliance.Ledger
		ps := d.heldWitnesses()
		if len(ps) == 0 || l.Size() == done || l.Blocked() != nil {
			continue
		}
		signed, size, err := l.CheckpointSize()
		if err != nil {
			continue
		}
		ok := true
		for _, p := range ps {
			ok = d.cosignFor(signed, size, p) && ok
		}
		if ok {
			done = size
		}
	}
}

// cosignFor gets signed cosigned by p's quorum unless the stored
// cosigned checkpoint has it already (a release waited for it), and
// reports whether this size needs no other try. Quorum 0 asks every
// witness of p once per size, best effort: one witness down does not
// have the loop ask them all again every minute.
func (d *Daemon) cosignFor(signed []byte, size int64, p witness.Policy) bool {
	once := p.Quorum == 0
	if once {
		p.Quorum = len(p.Witnesses)
	}
	if _, _, err := witness.VerifyQuorum(witness.WithCosignatures(d.cfg.Appliance.Dir, signed), p); err == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.WitnessTimeout)
	defer cancel()
	if _, _, err := d.cosigner.Cosign(ctx, d.cfg.Appliance.Ledger, signed, size, p); err != nil {
		d.cfg.Log.Warn("checkpoint not cosigned", "size", size, "err", err)
		return once
	}
	return true
}

// witnessEvery is how often the loop looks for a checkpoint to submit
// besides after each entry.
const witnessEvery = time.Minute

// heldWitnesses is the witness policy of each held key ID's escrow file
// that names witnesses, each once.
func (d *Daemon) heldWitnesses() []witness.Policy {
	var ps []witness.Policy
	ids, err := d.cfg.Appliance.KeyIDs()
	if err != nil {
		return nil
	}
	for _, k := range ids {
		b, err := d.cfg.Appliance.Bundle(k)
		if err != nil {
			continue
		}
		wp := b.Escrow.WitnessPolicy()
		if len(wp.Witnesses) > 0 && !slices.ContainsFunc(ps, func(x witness.Policy) bool { return samePolicy(x, wp) }) {
			ps = append(ps, wp)
		}
	}
	return ps
}

// noteAppended wakes the witness loop after an entry.
func (d *Daemon) noteAppended() {
	select {
	case d.appended <- struct{}{}:
	default:
	}
}

// witnessesAnswer checks, before anything is written for a release, that
// each witness quorum the key IDs' escrow files name cosigns the
// appliance's current checkpoint within WitnessTimeout. A release entry
// spends its warrant (its replay key is in the ledger), and after the
// entry nothing leaves without the quorum: asking first means a witness
// outage costs the court nothing — the warrant is refused with
// witness_unreachable (or witness_refused for good) and can be submitted
// again — and the wait after the entry is short, as the witnesses then
// hold a tree one entry behind. Key IDs without witnesses ask nothing.
func (d *Daemon) witnessesAnswer(bundles []*escrow.Bundle) (Code, error) {
	l := d.cfg.Appliance.Ledger
	var asked []witness.Policy
	for _, b := range bundles {
		p := b.Escrow.WitnessPolicy()
		if p.Quorum == 0 || slices.ContainsFunc(asked, func(q witness.Policy) bool { return samePolicy(p, q) }) {
			continue
		}
		asked = append(asked, p)
		signed, size, err := l.CheckpointSize()
		if err != nil {
			return CodeInternal, fmt.Errorf("checkpoint for the witnesses: %w", err)
		}
		ctx, cancel := context.WithTimeout(d.ctx, d.cfg.WitnessTimeout)
		_, _, err = d.cosigner.Ask(ctx, l, signed, size, p)
		cancel()
		if err == nil {
			continue
		}
		if d.ctx.Err() != nil {
			return CodeShuttingDown, errors.New("the appliance is shutting down; nothing was released and the warrant is not spent: submit it again when the appliance is back")
		}
		switch code, advice := witnessCode(err, CodeWitnessUnreachable); code {
		case CodeWitnessRefused:
			return code, fmt.Errorf("key ID %s: %w; nothing was released and the warrant is not spent: %s", b.Escrow.KeyID, err, advice)
		case CodeWitnessUnreachable:
			return code, fmt.Errorf("key ID %s: %w (waited %s); nothing was released and the warrant is not spent: submit the same warrant again once the witnesses can be reached", b.Escrow.KeyID, err, d.cfg.WitnessTimeout)
		default:
			return code, fmt.Errorf("key ID %s: asking the witnesses: %w", b.Escrow.KeyID, err)
		}
	}
	return "", nil
}

// witnessCode classifies an error of the witnesses: witness_refused with
// what it means for the operator (a witness that does not know the log,
// or one that holds another history), timeout for one that did not
// answer in time (witness_unreachable before the entry, witness_timeout
// after it), internal for anything else.
func witnessCode(err error, timeout Code) (Code, string) {
	switch {
	case errors.Is(err, witness.ErrRefused) && !errors.Is(err, witness.ErrBehind) && !errors.Is(err, witness.ErrConflict):
		return CodeWitnessRefused, "the witnesses must know this log's origin and key (docs/ledger.md)"
	case errors.Is(err, witness.ErrRefused):
		return CodeWitnessRefused, "the appliance's operator must look before it can release: the ledger may have been restored from a copy (docs/ledger.md)"
	case errors.Is(err, witness.ErrTimeout):
		return timeout, ""
	}
	return CodeInternal, ""
}

// samePolicy reports whether two policies name the same witnesses in the
// same order with the same quorum: one answer serves both.
func samePolicy(a, b witness.Policy) bool {
	return a.Quorum == b.Quorum && slices.Equal(a.Witnesses, b.Witnesses)
}

// refuseWitnesses refuses a verified warrant the witnesses held up before
// its summary, as any other refusal of a verified warrant (an entry the
// first time, counted after); a shutdown is counted.
func (d *Daemon) refuseWitnesses(p7s []byte, code Code, err error) *Refusal {
	if code == CodeShuttingDown {
		return d.count(code, err)
	}
	return d.refuse(p7s, code, err)
}

// inOrder is the bundles of keyIDs, in that order (absent ones left out).
func inOrder(keyIDs []string, bundles map[string]*escrow.Bundle) []*escrow.Bundle {
	out := make([]*escrow.Bundle, 0, len(keyIDs))
	for _, k := range keyIDs {
		if b := bundles[k]; b != nil {
			out = append(out, b)
		}
	}
	return out
}
