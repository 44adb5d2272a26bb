package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
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
	// Every witness is asked; as many saying "another history" as the
	// escrow file's quorum (at least one) are what the agency trusts too.
	p.Quorum = max(p.Quorum, 1)
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

// checkWitnesses offers the served checkpoint to each witness on its own
// and weighs their answers: the escrow file's quorum refusing it as
// another history is a split view; fewer is their word against the
// others', and a witness that does not know the log is misconfigured:
// both are alarms that do not stick.
func (f *follower) checkWitnesses(ctx context.Context, signed []byte, cp *log.Checkpoint, src *remoteTiles) error {
	if f.witnesses == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, witnessTimeout)
	defer cancel()
	p := f.witnesses.policy
	errs := make([]error, len(p.Witnesses))
	var wg sync.WaitGroup
	for i, w := range p.Witnesses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := witness.Policy{Witnesses: []witness.Witness{w}, Quorum: 1}
			_, _, errs[i] = f.witnesses.cosigner.Cosign(ctx, tileProver{src.hashes}, signed, int64(cp.Size), one)
		}()
	}
	wg.Wait()
	var conflicts, behind, refused, unreachable []error
	for _, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, witness.ErrConflict):
			conflicts = append(conflicts, err)
		case errors.Is(err, witness.ErrBehind):
			behind = append(behind, err)
		case errors.Is(err, witness.ErrRefused):
			refused = append(refused, err)
		default:
			unreachable = append(unreachable, err)
		}
	}
	switch {
	case len(conflicts) >= p.Quorum:
		return f.proven(findSplitView, signed, "its witnesses cosigned another history of this log: %s", joinErrors(conflicts))
	case len(behind) > 0:
		// Like a smaller signed tree than one seen: a stale copy, or a
		// rollback; not proof by itself.
		return f.alarm(findStale, "%s serves a checkpoint older than what its witnesses cosigned: a stale copy (a cache, a mirror) or a rollback: %s", f.url, joinErrors(behind))
	case len(conflicts) > 0:
		return f.alarm(findUnreachable, "%d of %s's witnesses say its checkpoint is another history of this log, fewer than the quorum of %d (their word, not proof): ask their keepers, and watch the next polls: %s", len(conflicts), f.url, p.Quorum, joinErrors(conflicts))
	case len(refused) > 0:
		// A witness that does not know the log or its key (being set up,
		// its database lost, a rotated key) proves nothing about the log.
		return f.alarm(findUnreachable, "a witness of --escrow cannot check %s's checkpoint (not proof of another history; ask the witness's keeper to add this log's origin and key): %s", f.url, joinErrors(refused))
	case len(unreachable) > 0:
		return f.alarm(findUnreachable, "asking its witnesses: %s", joinErrors(unreachable))
	}
	return nil
}

// joinErrors is the witnesses' answers on one line.
func joinErrors(errs []error) string {
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}
