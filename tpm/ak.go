package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// akTemplate is the attestation key: ECC P-256, restricted to signing
// TPM-generated structures (quotes), never leaving the TPM. It is a primary
// key of the endorsement hierarchy, so the same template always yields the
// same key on the same TPM and nothing needs to be stored for it.
var akTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		NoDA:                true,
		Restricted:          true,
		SignEncrypt:         true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTECCScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
		},
		CurveID: tpm2.TPMECCNistP256,
		KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// AKPublic is an attestation key as a verifier knows it: its public area,
// checked to be a restricted, TPM-resident P-256 signing key.
type AKPublic struct {
	public tpm2.TPMTPublic
	key    *ecdsa.PublicKey
}

// ParseAKPublic decodes a TPMT_PUBLIC and checks that it describes a key
// the TPM generated, cannot export, and uses only to sign what the TPM
// itself produced: anything else could sign a forged quote.
func ParseAKPublic(data []byte) (*AKPublic, error) {
	public, err := tpm2.Unmarshal[tpm2.TPMTPublic](data)
	if err != nil || !bytes.Equal(tpm2.Marshal(public), data) {
		return nil, errors.New("attestation key: public area does not parse canonically")
	}
	a := public.ObjectAttributes
	if public.Type != tpm2.TPMAlgECC || public.NameAlg != tpm2.TPMAlgSHA256 ||
		!a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.Restricted ||
		!a.SignEncrypt || a.Decrypt {
		return nil, errors.New("attestation key is not a restricted, non-exportable ECC signing key")
	}
	params, err := public.Parameters.ECCDetail()
	if err != nil || params.CurveID != tpm2.TPMECCNistP256 || params.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return nil, errors.New("attestation key is not ECDSA P-256")
	}
	pub, err := tpm2.Pub(*public)
	if err != nil {
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	key := pub.(*ecdsa.PublicKey)
	if _, err := key.ECDH(); err != nil {
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	return &AKPublic{public: *public, key: key}, nil
}

// Marshal returns the TPMT_PUBLIC encoding.
func (p *AKPublic) Marshal() []byte { return tpm2.Marshal(p.public) }

// PublicKey returns the key that verifies quotes.
func (p *AKPublic) PublicKey() *ecdsa.PublicKey { return p.key }

// Name is the TPM Name that credential activation binds to.
func (p *AKPublic) Name() []byte {
	name, err := tpm2.ObjectName(&p.public)
	if err != nil {
		panic("tpm: naming a checked AK: " + err.Error())
	}
	return name.Buffer
}

// AK is the attestation key loaded in a TPM. Close flushes it.
type AK struct {
	t      transport.TPM
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	Public *AKPublic
}

// LoadAK derives the attestation key from the endorsement seed and loads
// it. The caller must Close it.
func LoadAK(t transport.TPM) (*AK, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(akTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating the attestation key: %w", err)
	}
	public, err := rsp.OutPublic.Contents()
	if err != nil {
		flush(t, rsp.ObjectHandle)
		return nil, err
	}
	pub, err := ParseAKPublic(tpm2.Marshal(public))
	if err != nil {
		flush(t, rsp.ObjectHandle)
		return nil, err
	}
	return &AK{t: t, handle: rsp.ObjectHandle, name: rsp.Name, Public: pub}, nil
}

// Close flushes the key from the TPM.
func (k *AK) Close() { flush(k.t, k.handle) }

func (k *AK) authHandle() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: k.handle, Name: k.name, Auth: tpm2.PasswordAuth(nil)}
}
