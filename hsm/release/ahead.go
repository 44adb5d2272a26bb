package release

import (
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/tpm"
)

// tpmState answers the questions the checks ask the TPM about its own
// state: the PCRs a share is sealed to (checkOpens), the version floor
// (belowFloor) and the free slots (checkRoom).
type tpmState interface {
	pcrs(indices []int) (tpm.PCRValues, error)
	floor() (uint64, error)
	room() error
}

// askTPM asks the TPM at each question.
type askTPM struct{ t transport.TPM }

func (a askTPM) pcrs(indices []int) (tpm.PCRValues, error) { return tpm.ReadPCRs(a.t, indices...) }
func (a askTPM) floor() (uint64, error)                    { return tpm.ReadFloor(a.t) }
func (a askTPM) room() error                               { return checkRoom(a.t) }

// readAhead asks the TPM's state questions in the background, after the
// press, while the warrant verifies again (the trust store read,
// signatures, CRLs, the replay index): the answers do not depend on the
// warrant, and the TPM's round trips then overlap the CPU's work instead
// of following it. Nothing is decided earlier or from older answers: each
// was read after the press, and is taken only where the check would have
// asked, in the same order, within the same recheck. A question the
// read-ahead did not cover (a bundle replaced since the summary names
// other PCRs) or could not answer is asked of the TPM then.
type readAhead struct {
	ask  askTPM
	done chan struct{}

	values   tpm.PCRValues
	pcrErr   error
	floorV   uint64
	floorErr error
	roomErr  error
}

// startReadAhead asks the TPM for the PCRs the summary's bundles are
// sealed to, its floor and its free slots, in the background. The caller
// waits for it (wait) before the TPM gate is let go.
func startReadAhead(t transport.TPM, bundles map[string]*escrow.Bundle) *readAhead {
	var indices []int
	for _, b := range bundles {
		indices = append(indices, b.Escrow.PCRs.Indices()...)
	}
	a := &readAhead{ask: askTPM{t}, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		a.values, a.pcrErr = a.ask.pcrs(indices)
		a.floorV, a.floorErr = a.ask.floor()
		a.roomErr = a.ask.room()
	}()
	return a
}

// wait returns once every question asked ahead has its answer.
func (a *readAhead) wait() { <-a.done }

func (a *readAhead) pcrs(indices []int) (tpm.PCRValues, error) {
	a.wait()
	if a.pcrErr == nil {
		out := make(tpm.PCRValues, len(indices))
		for _, i := range indices {
			v, ok := a.values[i]
			if !ok {
				return a.ask.pcrs(indices)
			}
			out[i] = v
		}
		return out.Clone(), nil
	}
	return a.ask.pcrs(indices)
}

func (a *readAhead) floor() (uint64, error) {
	a.wait()
	if a.floorErr == nil {
		return a.floorV, nil
	}
	return a.ask.floor()
}

func (a *readAhead) room() error {
	a.wait()
	if a.roomErr == nil {
		return nil
	}
	return a.ask.room()
}
