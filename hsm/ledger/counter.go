package ledger

import (
	"bytes"
	"crypto/subtle"
	"errors"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
)

// TPMCounter is the appliance's counter: a TPM NV counter.
type TPMCounter struct {
	TPM     transport.TPM
	Counter tpm.Counter
}

func (c TPMCounter) Read() (uint64, error)      { return c.Counter.Read(c.TPM) }
func (c TPMCounter) Create() (uint64, error)    { return c.Counter.Create(c.TPM) }
func (c TPMCounter) Increment() (uint64, error) { return c.Counter.Increment(c.TPM) }

func isNoCounter(err error) bool { return errors.Is(err, tpm.ErrNoCounter) }

func equal(a, b []byte) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1 || (len(a) == 0 && len(b) == 0 && bytes.Equal(a, b))
}
