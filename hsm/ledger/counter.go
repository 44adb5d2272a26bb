package ledger

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"sync"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
)

// TPMCounter is the appliance's counter: a TPM NV counter. It keeps the
// value it last read or set, so that an append costs one TPM command
// (tpm.Counter.Bump) once Read (at Open, in reconcile) or Create has
// checked the index. Until then, and after any failed command, Increment
// checks and reads the index again (three commands).
//
// An increment by anyone else while the ledger is open is seen by the next
// append that spends a replay key (IncrementChecked reads the value back:
// two commands); other appends do not see it, and the next Open refuses
// the ledger (ErrRolledBack), as it refuses a restored copy.
type TPMCounter struct {
	TPM     transport.TPM
	Counter tpm.Counter

	mu    sync.Mutex
	value uint64 // the index's value after the last command, when known
	known bool
}

func (c *TPMCounter) Read() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keep(c.Counter.Read(c.TPM))
}

func (c *TPMCounter) Create() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keep(c.Counter.Create(c.TPM))
}

func (c *TPMCounter) Increment() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		return c.keep(c.Counter.Increment(c.TPM))
	}
	if err := c.Counter.Bump(c.TPM); err != nil {
		c.known = false // the increment may or may not have happened
		return 0, err
	}
	c.value++
	return c.value, nil
}

func (c *TPMCounter) IncrementChecked() (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		return c.keep(c.Counter.Increment(c.TPM))
	}
	return c.keep(c.Counter.BumpAndRead(c.TPM))
}

// keep remembers a value the TPM returned, or forgets it on an error.
func (c *TPMCounter) keep(v uint64, err error) (uint64, error) {
	c.value, c.known = v, err == nil
	return v, err
}

func isNoCounter(err error) bool { return errors.Is(err, tpm.ErrNoCounter) }

func equal(a, b []byte) bool {
	return len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1 || (len(a) == 0 && len(b) == 0 && bytes.Equal(a, b))
}
