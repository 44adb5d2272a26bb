package tpm

import (
	"encoding/binary"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// retrying resends a command the TPM answered with TPM_RC_RETRY, YIELDED
// or TESTING. Those warnings mean the command was not executed, so the
// identical bytes (same session nonces) are safe to send again. go-tpm's
// direct API does not do this itself.
type retrying struct {
	transport.TPMCloser
}

func withRetry(t transport.TPMCloser) transport.TPMCloser { return &retrying{t} }

const (
	maxRetries = 20
	retryDelay = 20 * time.Millisecond
)

func (r *retrying) Send(cmd []byte) ([]byte, error) {
	for i := 0; ; i++ {
		rsp, err := r.TPMCloser.Send(cmd)
		if err != nil || i == maxRetries || !isRetryWarning(rsp) {
			return rsp, err
		}
		time.Sleep(retryDelay)
	}
}

// Unwrap gives tests and benchmarks the underlying transport.
func (r *retrying) Unwrap() transport.TPMCloser { return r.TPMCloser }

func isRetryWarning(rsp []byte) bool {
	if len(rsp) < 10 {
		return false
	}
	switch tpm2.TPMRC(binary.BigEndian.Uint32(rsp[6:10])) {
	case tpm2.TPMRCRetry, tpm2.TPMRCYielded, tpm2.TPMRCTesting:
		return true
	}
	return false
}
