package tpm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// Approval is the approver's signature allowing a scoped key to work while
// the PCRs hold PCRs and the floor is at most Version: how a key follows
// an approved image update without leaving the TPM. The TPM checks it
// (TPM2_VerifySignature, then TPM2_PolicyAuthorize); no software on the
// device can forge it. Because the approved policy carries the floor
// term, an approval of an older image stops working once the floor rises
// above its version.
type Approval struct {
	PCRs      PCRValues
	Version   uint64 // the approved image's security version
	Signature []byte // ASN.1 ECDSA P-256 over ApprovalDigest(PCRs, Version)
}

// approvalRef is PolicyAuthorize's policyRef: it keeps the approver's
// signatures for scoped keys apart from anything else the key signs. v2
// approvals sign a policy with the floor term; a v1 approval (PCRs only)
// does not satisfy a key that names v2, so it cannot skip the floor.
const approvalRef = "custodian scoped approval v2"

// ErrBadApproval: the TPM refused the approval's signature.
var ErrBadApproval = errors.New("the approval is not signed by the scoped key's approver")

// ApprovalDigest is what the approver signs to approve the image with
// pcrs and security version: the TPM's aHash, SHA-256(policy ‖ policyRef)
// where policy is [ImagePolicyDigest] (PolicyPCR · PolicyNV(floor)).
func ApprovalDigest(pcrs PCRValues, version uint64) ([]byte, error) {
	policy, err := ImagePolicyDigest(pcrs, version)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(policy)
	h.Write([]byte(approvalRef))
	return h.Sum(nil), nil
}

// ParseApprover decodes an approver's P-256 public key (PKIX DER).
func ParseApprover(der []byte) (*ecdsa.PublicKey, error) {
	key, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("approver key: %w", err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("approver key: not an ECDSA P-256 key")
	}
	return ec, nil
}

// approverPublic is the public area the TPM loads the approver as; its
// Name is what the scoped keys' policies name.
func approverPublic(key *ecdsa.PublicKey) (tpm2.TPMTPublic, error) {
	ecdhKey, err := key.ECDH()
	if err != nil {
		return tpm2.TPMTPublic{}, err
	}
	attrs := tpm2.TPMAObject{SignEncrypt: true, UserWithAuth: true}
	return p256Public(attrs, tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, nil, ecdhKey.Bytes()), nil
}

func approverName(key *ecdsa.PublicKey) (tpm2.TPM2BName, error) {
	pub, err := approverPublic(key)
	if err != nil {
		return tpm2.TPM2BName{}, err
	}
	name, err := tpm2.ObjectName(&pub)
	if err != nil {
		return tpm2.TPM2BName{}, err
	}
	return *name, nil
}

// approvalTicket has the TPM check the approval's signature with the
// approver's public key, and returns the ticket PolicyAuthorize needs.
func approvalTicket(t transport.TPM, approver *ecdsa.PublicKey, a *Approval) (*tpm2.TPMTTKVerified, error) {
	digest, err := ApprovalDigest(a.PCRs, a.Version)
	if err != nil {
		return nil, err
	}
	sig, err := tpmSignature(a.Signature)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadApproval, err)
	}
	pub, err := approverPublic(approver)
	if err != nil {
		return nil, err
	}
	loaded, err := tpm2.LoadExternal{InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHOwner}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("loading the approver's key: %w", err)
	}
	defer flush(t, loaded.ObjectHandle)
	rsp, err := tpm2.VerifySignature{
		KeyHandle: tpm2.NamedHandle{Handle: loaded.ObjectHandle, Name: loaded.Name},
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		Signature: sig,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadApproval, err)
	}
	return &rsp.Validation, nil
}

// tpmSignature converts an ASN.1 ECDSA signature for the TPM.
func tpmSignature(der []byte) (tpm2.TPMTSignature, error) {
	var r, s []byte
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, asn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1Integer(&r) || !seq.ReadASN1Integer(&s) || !seq.Empty() {
		return tpm2.TPMTSignature{}, errors.New("not an ASN.1 ECDSA signature")
	}
	return tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       tpm2.TPMAlgSHA256,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: trimZero(r)},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: trimZero(s)},
		}),
	}, nil
}

func trimZero(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}
