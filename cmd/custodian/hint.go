package main

import "errors"

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
