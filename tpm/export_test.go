package tpm

import (
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// LoadScopedObject loads one object of a scoped key (the twin if twin is
// set), for tests that try to misuse it. The caller flushes the handle.
func LoadScopedObject(t transport.TPM, k *ScopedKey, twin bool) (*tpm2.LoadResponse, error) {
	sess, closeSession, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16, tpm2.Salted(k.EK.handle(), k.EK.public))
	if err != nil {
		return nil, err
	}
	defer closeSession()
	w := &k.zgen
	if twin {
		w = &k.twin
	}
	return loadScoped(t, sess, k, w)
}

// PolicyPCRCommand satisfies PolicyPCR(pcrs) · PolicyCommandCode(cc).
var PolicyPCRCommand = pcrCommandSession
