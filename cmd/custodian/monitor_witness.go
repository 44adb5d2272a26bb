package main

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/witness"
)

// witnessCheck compares what an appliance serves with what its witnesses
// cosigned: every served checkpoint is offered to each witness with a
// consistency proof from the tree that witness last cosigned (C2SP
// tlog-witness; the proof comes from the served tiles, checked against
// the served checkpoint). A witness that refuses it as inconsistent (HTTP
// 422) cosigned another history of the log, and one ahead of it a larger
// tree: the appliance shows a history the world did not see. A witness
// that does not know the log is a misconfigured witness, not a finding
// about the log. A witness that accepts cosigns the newer checkpoint,
// as the protocol allows anyone to ask.
type witnessCheck struct {
	policy   witness.Policy
	cosigner *witness.Cosigner
}

// witnessTimeout bounds the witnesses' answers in one poll.
const witnessTimeout = 30 * time.Second

// newWitnessCheck reads the witnesses of the escrow file --escrow names
// (nil without one); what they cosigned for the monitor is kept in the
// state directory, one file per log.
func newWitnessCheck(escrowPath, stateDir, name string) (*witnessCheck, error) {
	if escrowPath == "" {
		return nil, nil
	}
	pub, err := readEscrow(escrowPath)
	if err != nil {
		return nil, err
	}
	p := pub.WitnessPolicy()
	if len(p.Witnesses) == 0 {
		return nil, withHint(errors.New("--escrow "+escrowPath+" names no witnesses"), "give the escrow file of a key ID whose escrow authority names witnesses, or leave out --escrow")
	}
	p.Quorum = len(p.Witnesses) // every witness is asked; any refusal is a finding
	c, err := witness.NewCosigner(filepath.Join(stateDir, name+".witnessed"), nil)
	if err != nil {
		return nil, err
	}
	return &witnessCheck{policy: p, cosigner: c}, nil
}

// tileProver proves consistency from the served tiles.
type tileProver struct{ hashes tlog.HashReader }

func (p tileProver) ConsistencyProof(old, size int64) (tlog.TreeProof, error) {
	return tlog.ProveTree(size, old, p.hashes)
}

// checkWitnesses offers the served checkpoint to the witnesses.
func (f *follower) checkWitnesses(ctx context.Context, signed []byte, cp *log.Checkpoint, src *remoteTiles) error {
	if f.witnesses == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, witnessTimeout)
	defer cancel()
	_, _, err := f.witnesses.cosigner.Cosign(ctx, tileProver{src.hashes}, signed, int64(cp.Size), f.witnesses.policy)
	switch {
	case errors.Is(err, witness.ErrBehind):
		// Like a smaller signed tree than one seen: a stale copy, or a
		// rollback; not proof by itself.
		return f.alarm(findStale, "%s serves a checkpoint older than what its witnesses cosigned: a stale copy (a cache, a mirror) or a rollback: %v", f.url, err)
	case errors.Is(err, witness.ErrConflict):
		return f.proven(findSplitView, signed, "its witnesses cosigned another history of this log: %v", err)
	case errors.Is(err, witness.ErrRefused):
		// A witness that does not know the log or its key (being set up,
		// its database lost, a rotated key) proves nothing about the log.
		return f.alarm(findUnreachable, "a witness of --escrow cannot check %s's checkpoint (not proof of another history; ask the witness's keeper to add this log's origin and key): %v", f.url, err)
	case err != nil:
		return f.alarm(findUnreachable, "asking its witnesses: %v", err)
	}
	return nil
}
