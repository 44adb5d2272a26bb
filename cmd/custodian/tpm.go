package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
)

// openTPM connects to the TPM named by --tpm, with hints for the usual
// mistakes, holding the data directory's lock until it is closed.
func (g *globals) openTPM() (transport.TPMCloser, error) {
	unlock, err := lockDataDir(g.dataDir)
	if err != nil {
		return nil, err
	}
	t, err := g.openTPMUnlocked()
	if err != nil {
		unlock()
		return nil, err
	}
	return &lockedTPM{TPMCloser: t, unlock: unlock}, nil
}

func (g *globals) openTPMUnlocked() (transport.TPMCloser, error) {
	t, err := tpm.Open(g.tpmSpec)
	switch {
	case errors.Is(err, tpm.ErrSimulatorUnavailable):
		return nil, withHint(err, "this binary was built without cgo; use --tpm swtpm:HOST:PORT, or a build with cgo")
	case errors.Is(err, fs.ErrNotExist):
		return nil, withHint(err, "this machine has no TPM device; try --tpm sim (simulator) or --tpm swtpm:127.0.0.1:2321")
	case errors.Is(err, fs.ErrPermission):
		return nil, withHint(err, "run as the custodian user, which may use "+g.tpmSpec)
	case err != nil && strings.HasPrefix(g.tpmSpec, "swtpm:"):
		var op *net.OpError
		if errors.As(err, &op) {
			err = fmt.Errorf("opening TPM %s: %w", g.tpmSpec, op.Err) // the cause, without Go's "dial tcp ADDR"
		}
		return nil, withHint(err, "no swtpm answers at "+strings.TrimPrefix(g.tpmSpec, "swtpm:")+
			": start one (swtpm socket --tpm2 --server type=tcp,port=PORT --ctrl type=tcp,port=PORT+1 --tpmstate dir=DIR --flags startup-clear), or fix --tpm")
	}
	return t, err
}
