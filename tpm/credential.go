package tpm

import (
	"crypto/rand"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Challenge proves that an attestation key lives in the same TPM as an
// endorsement key. The verifier encrypts a random secret to the EK, bound
// to the AK's Name; only that TPM can recover it, and only while an object
// with that Name is loaded (TPM2_ActivateCredential).
type Challenge struct {
	Credential []byte // TPM2B_ID_OBJECT contents
	Secret     []byte // TPM2B_ENCRYPTED_SECRET contents
}

// challengeSecretSize is the length of the secret inside a challenge.
const challengeSecretSize = 32

// MakeChallenge runs offline at the verifier. It returns the challenge for
// the device and the secret the device must give back.
func MakeChallenge(ek *EK, akName []byte) (*Challenge, []byte, error) {
	secret := make([]byte, challengeSecretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, err
	}
	key, err := tpm2.ImportEncapsulationKey(&ek.public)
	if err != nil {
		return nil, nil, err
	}
	cred, enc, err := tpm2.CreateCredential(rand.Reader, key, akName, secret)
	if err != nil {
		return nil, nil, fmt.Errorf("making credential: %w", err)
	}
	return &Challenge{Credential: cred, Secret: enc}, secret, nil
}

// Activate answers a challenge for this AK with the TPM's EK, inside a
// session salted to the EK that encrypts the recovered secret on the bus.
func (k *AK) Activate(ek *EK, c *Challenge) ([]byte, error) {
	sess, closeSession, err := tpm2.PolicySession(k.t, tpm2.TPMAlgSHA256, 16,
		tpm2.Salted(ek.handle(), ek.public),
		tpm2.AESEncryption(128, tpm2.EncryptOut))
	if err != nil {
		return nil, fmt.Errorf("starting a session salted to the endorsement key: %w", err)
	}
	defer closeSession()
	if err := endorsementPolicy(k.t, sess); err != nil {
		return nil, err
	}
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: k.authHandle(),
		KeyHandle:      ek.authHandle(sess),
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: c.Credential},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: c.Secret},
	}.Execute(k.t)
	if err != nil {
		return nil, fmt.Errorf("activating the credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
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
