package enrollment

import (
	"fmt"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/tpm"
)

// Challenge is what a verifier sends a device to prove that the
// enrollment's attestation key is in the TPM with the enrollment's EK.
type Challenge struct {
	Version         int    `json:"version"`
	CustodianID     string `json:"custodian_id"`
	EKName          []byte `json:"ek_name"`
	AKName          []byte `json:"ak_name"`
	Credential      []byte `json:"credential"`
	EncryptedSecret []byte `json:"encrypted_secret"`
}

// NewChallenge makes a challenge for the keys of e and returns it with the
// secret the verifier keeps (and later passes to Verify). e's own
// signatures are not checked here; Verify does that.
func NewChallenge(e *Enrollment) (*Challenge, []byte, error) {
	ek, err := tpm.ParseEK(e.EK.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	ak, err := tpm.ParseAKPublic(e.AK)
	if err != nil {
		return nil, nil, err
	}
	c, secret, err := tpm.MakeChallenge(ek, ak.Name())
	if err != nil {
		return nil, nil, err
	}
	return &Challenge{
		Version:         Version,
		CustodianID:     e.CustodianID,
		EKName:          ek.Name(),
		AKName:          ak.Name(),
		Credential:      c.Credential,
		EncryptedSecret: c.Secret,
	}, secret, nil
}

// ParseChallenge decodes a challenge strictly.
func ParseChallenge(data []byte) (*Challenge, error) {
	var c Challenge
	if err := strictjson.Decode(data, &c, MaxSize); err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	if c.Version != Version {
		return nil, fmt.Errorf("challenge: unsupported version %d", c.Version)
	}
	if err := CheckID(c.CustodianID); err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	return &c, nil
}
