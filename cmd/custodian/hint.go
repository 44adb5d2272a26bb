package main

import (
	"errors"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// hinted is an error that carries advice for the person at the terminal.
// Packages return plain errors; only the command layer knows what the user
// typed and can say what to do next.
type hinted struct {
	err   error
	hints []string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// withHint attaches hints to err. A nil err stays nil.
func withHint(err error, hints ...string) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hints: hints}
}

// hintsOf collects the hints attached anywhere in err's chain.
func hintsOf(err error) []string {
	var out []string
	for err != nil {
		var h *hinted
		if !errors.As(err, &h) {
			break
		}
		out = append(out, h.hints...)
		err = h.err
	}
	return out
}

// blockedHint says how an operator resolves a blocked ledger.
func blockedHint(err error) error {
	switch {
	case errors.Is(err, ledger.ErrStateUnauthenticated):
		return withHint(err, "boot the approved image: only it can check and bind the data directory")
	case errors.Is(err, ledger.ErrStateMismatch), errors.Is(err, ledger.ErrChangeInterrupted):
		return withHint(err, "restore the data directory from its newest state if you can; otherwise check trust/ and bundles/ (custodian trust list), accept them with custodian ledger resolve-rollback (logged), then set the current CRL and roots again")
	case errors.Is(err, ledger.ErrBlocked):
		return withHint(err, "an operator resolves this with custodian ledger resolve-rollback, which is logged")
	}
	return err
}
