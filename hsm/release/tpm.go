package release

import (
	"sync"
	"sync/atomic"

	"github.com/google/go-tpm/tpm2/transport"
)

// SerialTPM shares one TPM connection between the daemon's goroutines: each
// command and its response go through alone (swtpm serves one client, and a
// TPM answers one command at a time), and it counts commands so a release can
// report how many it took.
type SerialTPM struct {
	mu sync.Mutex
	t  transport.TPM
	n  atomic.Int64
}

// Serialize wraps t.
func Serialize(t transport.TPM) *SerialTPM { return &SerialTPM{t: t} }

// Send implements transport.TPM.
func (s *SerialTPM) Send(cmd []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n.Add(1)
	return s.t.Send(cmd)
}

// Commands is the number of commands sent so far.
func (s *SerialTPM) Commands() int64 { return s.n.Load() }
