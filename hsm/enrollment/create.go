package enrollment

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
)

// Create enrolls the TPM behind t under custodianID: it makes sure the
// endorsement key and the import key of the given kind are persistent,
// reads the EK's certificate, loads the attestation key, quotes
// [EnrolledPCRs] and certifies the import key, both with the same nonce.
//
// With a nil challenge the quote's nonce is random: the enrollment shows
// the device's state but does not prove its AK is in its TPM. With a
// challenge from [NewChallenge] the device proves it.
func Create(t transport.TPM, custodianID string, kind tpm.EKKind, challenge *Challenge, now time.Time) (*Enrollment, error) {
	if err := CheckID(custodianID); err != nil {
		return nil, err
	}
	ek, err := tpm.ProvisionEK(t, kind)
	if err != nil {
		return nil, err
	}
	importKey, err := tpm.ProvisionImportKey(t, kind)
	if err != nil {
		return nil, err
	}
	// The version floor is defined before the ledger's counter exists;
	// see tpm.FloorIndex.
	if _, err := tpm.DefineFloor(t); err != nil {
		return nil, fmt.Errorf("defining the security version floor: %w", err)
	}
	cert, chain, err := tpm.ReadEKCertificate(t, kind)
	if err != nil {
		return nil, err
	}
	ak, err := tpm.LoadAK(t)
	if err != nil {
		return nil, err
	}
	defer ak.Close()

	nonce, err := quoteNonce(ak, ek, custodianID, challenge)
	if err != nil {
		return nil, err
	}
	q, pcrs, err := ak.Quote(EnrolledPCRs, nonce)
	if err != nil {
		return nil, err
	}
	certification, err := ak.CertifyImportKey(importKey, nonce)
	if err != nil {
		return nil, err
	}
	return &Enrollment{
		Version:     Version,
		CustodianID: custodianID,
		Created:     now.UTC().Truncate(time.Second),
		EK: EndorsementKey{
			Kind: kind.String(), PublicKey: ek.MarshalPKIX(), Certificate: cert, Chain: chain,
		},
		AK:        ak.Public.Marshal(),
		ImportKey: ImportKey{PublicKey: importKey.MarshalPKIX(), Certification: *certification},
		PCRs:      pcrs,
		Nonce:     nonce,
		Activated: challenge != nil,
		Quote:     *q,
	}, nil
}

// quoteNonce answers the challenge, if any, or draws a random nonce.
func quoteNonce(ak *tpm.AK, ek *tpm.EK, custodianID string, c *Challenge) ([]byte, error) {
	if c == nil {
		return randomNonce()
	}
	if c.CustodianID != custodianID {
		return nil, fmt.Errorf("the challenge is for custodian %q, not %q", c.CustodianID, custodianID)
	}
	if !bytes.Equal(c.EKName, ek.Name()) || !bytes.Equal(c.AKName, ak.Public.Name()) {
		return nil, errors.New("the challenge was made for another TPM's keys")
	}
	secret, err := ak.Activate(ek, &tpm.Challenge{Credential: c.Credential, Secret: c.EncryptedSecret})
	if err != nil {
		return nil, err
	}
	return bindingNonce(secret, custodianID), nil
}
