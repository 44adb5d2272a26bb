package escrow

import (
	"errors"
	"fmt"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/witness"
)

// checkWitnesses: witnesses listed come with their quorum, stated (0
// included): a missing quorum is never read as 0.
func (p *Public) checkWitnesses() error {
	if len(p.Witnesses) > 0 && p.WitnessQuorum == nil {
		return errors.New("the file lists witnesses but no witness_quorum: state how many must cosign (0 to submit to them without waiting)")
	}
	if err := p.WitnessPolicy().Check(); err != nil {
		return fmt.Errorf("witnesses: %w", err)
	}
	return nil
}

// WitnessPolicy is the witnesses and quorum the file names (quorum 0
// when it names none).
func (p *Public) WitnessPolicy() witness.Policy {
	q := 0
	if p.WitnessQuorum != nil {
		q = *p.WitnessQuorum
	}
	return witness.Policy{Witnesses: p.Witnesses, Quorum: q}
}

// WithWitnesses makes a ceremony name witnesses and their quorum.
func WithWitnesses(ws []witness.Witness, quorum int) Option {
	return func(p *Public) {
		p.Witnesses = ws
		p.WitnessQuorum = &quorum
	}
}

// ErrNotWitnessed: a release package does not prove, by a checkpoint
// the escrow file's witness quorum cosigned, that its release entry is in
// its custodian's ledger.
var ErrNotWitnessed = errors.New("the release is not witnessed")

// checkWitnessed refuses a package whose release entry is not in a
// checkpoint cosigned by the quorum of the file's witnesses: the entry
// is then known outside the custodian, and the custodian cannot show
// another history without a witness refusing it. Nothing is asked when
// the quorum is 0.
func (p *Public) checkWitnessed(r *Release) error {
	policy := p.WitnessPolicy()
	if policy.Quorum == 0 {
		return nil
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("the release from %s: %w: %s", r.CustodianID, ErrNotWitnessed, fmt.Sprintf(format, args...))
	}
	if r.Ledger == nil {
		return fail("it carries no ledger proof")
	}
	cp, _, err := witness.VerifyQuorum([]byte(r.Ledger.Checkpoint), policy)
	if err != nil {
		return fail("%v", err)
	}
	if cp.Origin != LedgerOrigin(r.CustodianID) {
		return fail("its checkpoint is of the log %q, not of custodian %s", cp.Origin, r.CustodianID)
	}
	if err := ledger.VerifyInclusion(cp, r.Ledger.Index, []byte(r.Ledger.Entry), r.Ledger.Proof); err != nil {
		return fail("its entry %d is not in the cosigned checkpoint", r.Ledger.Index)
	}
	e, err := ledger.ParseEntry([]byte(r.Ledger.Entry))
	if err != nil || e.Kind != ledger.KindRelease || e.Outcome != ledger.OutcomeOK || e.KeyID != r.KeyID {
		return fail("its ledger entry is not a release of key ID %s", r.KeyID)
	}
	return nil
}

// LedgerOrigin is the checkpoint origin of a custodian's ledger: the
// appliance names its log so, and a package's checkpoint must be its
// custodian's.
func LedgerOrigin(custodianID string) string { return "custodian/" + custodianID }
