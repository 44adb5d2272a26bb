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
// cosignatures. It is best effort: a release waits for its own quorum
// (witnessed); this loop only keeps the witnesses up to date.
func (d *Daemon) witnessLoop() {
	defer d.wg.Done()
	tick := time.NewTicker(witnessEvery)
	defer tick.Stop()
	var done int64 // the size last cosigned by this loop
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-tick.C:
		case <-d.appended:
		}
		l := d.cfg.Appliance.Ledger
		p := d.heldWitnesses()
		if p.Quorum == 0 || l.Size() == done || l.Blocked() != nil {
			continue
		}
		signed, size, err := l.CheckpointSize()
		if err != nil {
			continue
		}
		if len(witness.WithCosignatures(d.cfg.Appliance.Dir, signed)) > len(signed) {
			done = size // a release waited for this one already
			continue
		}
		ctx, cancel := context.WithTimeout(d.ctx, d.cfg.WitnessTimeout)
		_, _, err = d.cosigner.Cosign(ctx, l, signed, size, p)
		cancel()
		if err != nil {
			d.cfg.Log.Warn("checkpoint not cosigned", "size", size, "err", err)
			continue
		}
		done = size
	}
}

// witnessEvery is how often the loop looks for a checkpoint to submit
// besides after each entry.
const witnessEvery = time.Minute

// heldWitnesses is every witness the held key IDs' escrow files name,
// with the largest quorum among them.
func (d *Daemon) heldWitnesses() witness.Policy {
	var p witness.Policy
	ids, err := d.cfg.Appliance.KeyIDs()
	if err != nil {
		return p
	}
	for _, k := range ids {
		b, err := d.cfg.Appliance.Bundle(k)
		if err != nil {
			continue
		}
		wp := b.Escrow.WitnessPolicy()
		for _, w := range wp.Witnesses {
			if !slices.ContainsFunc(p.Witnesses, func(x witness.Witness) bool { return x.Key == w.Key }) {
				p.Witnesses = append(p.Witnesses, w)
			}
		}
		p.Quorum = max(p.Quorum, wp.Quorum)
	}
	return p
}

// noteAppended wakes the witness loop after an entry.
func (d *Daemon) noteAppended() {
	select {
	case d.appended <- struct{}{}:
	default:
	}
}
