package release

import (
	"context"
	"slices"
	"time"

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
// cosigned checkpoint has it already (a release waited for it); quorum 0
// asks every witness of p, best effort.
func (d *Daemon) cosignFor(signed []byte, size int64, p witness.Policy) bool {
	if p.Quorum == 0 {
		p.Quorum = len(p.Witnesses)
	}
	if _, _, err := witness.VerifyQuorum(witness.WithCosignatures(d.cfg.Appliance.Dir, signed), p); err == nil {
		return true
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.WitnessTimeout)
	defer cancel()
	if _, _, err := d.cosigner.Cosign(ctx, d.cfg.Appliance.Ledger, signed, size, p); err != nil {
		d.cfg.Log.Warn("checkpoint not cosigned", "size", size, "err", err)
		return false
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
		if len(wp.Witnesses) > 0 && !slices.ContainsFunc(ps, func(x witness.Policy) bool { return slices.Equal(x.Witnesses, wp.Witnesses) && x.Quorum == wp.Quorum }) {
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
