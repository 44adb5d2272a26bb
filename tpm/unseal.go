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
	ErrWrongEK     = errors.New("sealed for another TPM's endorsement key")
	ErrPCRMismatch = errors.New("the TPM's PCRs do not hold the values the blob was sealed to")
	ErrCorruptBlob = errors.New("the TPM refused the sealed blob: it is corrupt or was altered")
)

// Unseal imports b under the TPM's persistent endorsement key and returns
// its secret, if the TPM's PCRs hold the blob's values and its security
// version floor is at most the blob's version. A blob below the floor
// fails with a [DowngradeError] (errors.Is ErrDowngrade).
//
// All ten commands run in one policy session salted to the EK, with
// response parameter encryption:
//
//	StartAuthSession(salt → EK) · PolicySecret(endorsement) · Import ·
//	PolicySecret(endorsement) · Load · PolicyPCR · PolicyNV(floor) ·
//	Unseal · Flush · Flush
//
// so the secret crosses the bus only encrypted under a session key that
// needs the EK's private key to derive. The policy session is reused: a
// policy session resets after each authorization it gives.
func Unseal(t transport.TPM, b *Blob) ([]byte, error) {
	sess, closeSession, err := tpm2.PolicySession(t, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(b.EK.handle(), b.EK.public),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, diagnose(t, b.EK, fmt.Errorf("starting a session salted to the endorsement key: %w", err))
	}
	defer closeSession()

	private, err := importWrapped(t, sess, b.EK, &b.wrapped)
	if err != nil {
		return nil, diagnose(t, b.EK, err)
	}
	return loadAndUnseal(t, sess, b, private)
}

// importWrapped re-wraps an object under the EK. The result is only
// usable on this TPM.
func importWrapped(t transport.TPM, sess tpm2.Session, ek *EK, w *wrapped) (tpm2.TPM2BPrivate, error) {
	if err := endorsementPolicy(t, sess); err != nil {
		return tpm2.TPM2BPrivate{}, err
	}
	private, err := importUnder(t, ek.authHandle(sess), w)
	if err != nil {
		return tpm2.TPM2BPrivate{}, fmt.Errorf("importing the wrapped object: %w", err)
	}
	return private, nil
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

func loadAndUnseal(t transport.TPM, sess tpm2.Session, b *Blob, private tpm2.TPM2BPrivate) ([]byte, error) {
	loaded, err := loadImported(t, sess, b.EK, &b.wrapped, private)
	if err != nil {
		return nil, err
	}
	defer flush(t, loaded.ObjectHandle)

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

// loadImported loads an object imported under the EK.
func loadImported(t transport.TPM, sess tpm2.Session, ek *EK, w *wrapped, private tpm2.TPM2BPrivate) (*tpm2.LoadResponse, error) {
	if err := endorsementPolicy(t, sess); err != nil {
		return nil, err
	}
	loaded, err := tpm2.Load{
		ParentHandle: ek.authHandle(sess),
		InPrivate:    private,
		InPublic:     tpm2.New2B(w.public),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("loading the imported object: %w", err)
	}
	return loaded, nil
}

// endorsementPolicy satisfies the EK's policy, PolicySecret(endorsement),
// in sess. The endorsement hierarchy's authorization is empty on the
// appliance; a TPM whose owner set one will refuse here.
func endorsementPolicy(t transport.TPM, sess tpm2.Session) error {
	_, err := tpm2.PolicySecret{
		AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		PolicySession: sess.Handle(),
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("authorizing use of the endorsement key: %w", err)
	}
	return nil
}

// diagnose turns a failure to start or import into a specific error. It
// runs only on the failure path, so the happy path stays at ten commands.
func diagnose(t transport.TPM, want *EK, cause error) error {
	ek, err := ReadEK(t, want.Kind())
	switch {
	case errors.Is(err, ErrNoEK):
		return fmt.Errorf("%w: %v", ErrNoEK, cause)
	case err == nil && !equalBytes(ek.Name(), want.Name()):
		return ErrWrongEK
	case errors.Is(cause, tpm2.TPMRCIntegrity), errors.Is(cause, tpm2.TPMRCValue),
		errors.Is(cause, tpm2.TPMRCSize), errors.Is(cause, tpm2.TPMRCInsufficient):
		return fmt.Errorf("%w: %v", ErrCorruptBlob, cause)
	}
	return cause
}
