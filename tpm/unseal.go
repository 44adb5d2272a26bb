package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Errors of Unseal a caller acts on: the blob belongs to another device, or
// this device's PCRs are not in the state the blob was sealed to.
var (
	ErrWrongKey    = errors.New("sealed for another TPM's import key")
	ErrPCRMismatch = errors.New("the TPM's PCRs do not hold the values the blob was sealed to")
	ErrCorruptBlob = errors.New("the TPM refused the sealed blob: it is corrupt or was altered")
)

// Unseal imports b under the TPM's persistent import key and returns its
// secret, if the TPM's PCRs hold the blob's values and its security
// version floor is at most the blob's version. A blob below the floor
// fails with a [DowngradeError] (errors.Is ErrDowngrade).
//
// All twelve commands run in one policy session salted to the import key,
// with response parameter encryption:
//
//	StartAuthSession(salt → import key) · PolicyCommandCode(Import) ·
//	PolicyOR · Import · PolicyCommandCode(Load) · PolicyOR · Load ·
//	PolicyPCR · PolicyNV(floor) · Unseal · Flush · Flush
//
// so the secret crosses the bus only encrypted under a session key that
// needs the import key's private key to derive. The policy session is
// reused: a policy session resets after each authorization it gives.
func Unseal(t transport.TPM, b *Blob) ([]byte, error) {
	sess, closeSession, err := saltedSession(t, b.Key)
	if err != nil {
		return nil, diagnose(t, b.Key, err)
	}
	defer closeSession()

	loaded, err := loadUnderImportKey(t, sess, b.Key, &b.wrapped)
	if err != nil {
		return nil, diagnose(t, b.Key, err)
	}
	defer flush(t, loaded.ObjectHandle)
	return unsealLoaded(t, sess, b, loaded)
}

// saltedSession starts a policy session salted to key, the Name computed
// from the certified key (never read back), that encrypts response
// parameters.
func saltedSession(t transport.TPM, key *ImportKey) (tpm2.Session, func() error, error) {
	sess, closeSession, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(key.kind.importHandle(), key.public),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, nil, fmt.Errorf("starting a session salted to the import key: %w", err)
	}
	return sess, closeSession, nil
}

// importUnder runs TPM2_Import of w under parent.
func importUnder(t transport.TPM, parent tpm2.AuthHandle, w *wrapped) (tpm2.TPM2BPrivate, error) {
	rsp, err := tpm2.Import{
		ParentHandle: parent,
		ObjectPublic: tpm2.New2B(w.public),
		Duplicate:    tpm2.TPM2BPrivate{Buffer: w.duplicate},
		InSymSeed:    tpm2.TPM2BEncryptedSecret{Buffer: w.seed},
		Symmetric:    tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
	}.Execute(t)
	if err != nil {
		return tpm2.TPM2BPrivate{}, err
	}
	return rsp.OutPrivate, nil
}

func unsealLoaded(t transport.TPM, sess tpm2.Session, b *Blob, loaded *tpm2.LoadResponse) ([]byte, error) {
	if err := passImage(t, sess, b.PCRs, b.Version); err != nil {
		return nil, err
	}
	rsp, err := tpm2.Unseal{
		ItemHandle: tpm2.AuthHandle{Handle: loaded.ObjectHandle, Name: loaded.Name, Auth: sess},
	}.Execute(t)
	if errors.Is(err, tpm2.TPMRCPolicyFail) {
		return nil, ErrPCRMismatch
	}
	if err != nil {
		return nil, fmt.Errorf("unsealing: %w", err)
	}
	return rsp.OutData.Buffer, nil
}

// diagnose turns a failure to start or import into a specific error. It
// runs only on the failure path, so the happy path stays at twelve
// commands.
func diagnose(t transport.TPM, want *ImportKey, cause error) error {
	held, err := ReadImportKey(t, want.Kind())
	switch {
	case errors.Is(err, ErrNoImportKey):
		return fmt.Errorf("%w: %v", ErrNoImportKey, cause)
	case err == nil && !equalBytes(held.Name(), want.Name()):
		return ErrWrongKey
	case errors.Is(cause, tpm2.TPMRCIntegrity), errors.Is(cause, tpm2.TPMRCValue),
		errors.Is(cause, tpm2.TPMRCSize), errors.Is(cause, tpm2.TPMRCInsufficient):
		return fmt.Errorf("%w: %v", ErrCorruptBlob, cause)
	}
	return cause
}
