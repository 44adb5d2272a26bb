// Package enrollment is a custodian appliance's identity as the rest of the
// system knows it: which TPM it is (endorsement key, and the
// manufacturer's certificate for it), which key signs its quotes
// (attestation key), which key secrets are sealed to (the import key,
// certified by the attestation key), and the PCR values it booted with.
//
// Secrets are never sealed to the EK: its policy, PolicySecret(endorsement),
// with the empty (and resettable) endorsement authorization, also
// authorizes TPM2_Rewrap, which hands out an EK-wrapped object's sensitive
// area. The import key ([tpm.ImportKey]) allows only Import, Load and
// Certify; the AK's TPM2_Certify of it, with the enrollment's quote nonce,
// shows it is in the same TPM, and its Name shows its template.
//
// An enrollment is made on the device ([Create]) and checked anywhere
// ([Enrollment.Verify]). Verification is strict by default: the zero
// [VerifyOptions] require an EK certificate that chains to a TPM vendor
// root, and proof that the attestation key lives in that same TPM.
//
// The proof is TPM2_ActivateCredential. A verifier makes a [Challenge] for
// the enrollment's EK and AK ([NewChallenge]) and keeps its secret; the
// device answers by enrolling again with the challenge, which only the
// TPM holding that EK and AK can open; the recovered secret, bound to the
// custodian ID, becomes the nonce of the enrollment's quote. The verifier
// then checks the quote's nonce against the secret it kept: a quote by a
// key outside that TPM, or a replayed old enrollment, cannot match.
//
// The secret never leaves the verifier (the escrow authority). To let
// anyone else trust the AK, the authority publishes a signed [Record] of
// each enrollment it verified; [VerifyOptions.Records] accepts it instead
// of the secret, for the EK, AK and import key it names and no other, while
// it is the newest record of that TPM and not expired ([Standing]).
//
// The file format is JSON, version 2 (version 1 named no import key and is
// refused), decoded strictly (unknown fields,
// duplicate keys and trailing data are refused; 64 KiB at most).
package enrollment

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/tpm"
)

// Version is the enrollment format this package writes and reads.
const Version = 2

// MaxSize caps an enrollment file.
const MaxSize = 64 << 10

// EnrolledPCRs are the PCRs an enrollment records and quotes: the firmware
// and boot PCRs 0–7 and the appliance's measurement PCRs 8–15.
var EnrolledPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// Enrollment is the JSON document `custodian enroll` writes.
type Enrollment struct {
	Version     int            `json:"version"`
	CustodianID string         `json:"custodian_id"`
	Created     time.Time      `json:"created"`
	EK          EndorsementKey `json:"ek"`
	// AK is the attestation key's TPMT_PUBLIC.
	AK []byte `json:"ak"`
	// ImportKey is what the ceremony seals to.
	ImportKey ImportKey     `json:"import_key"`
	PCRs      tpm.PCRValues `json:"pcrs"`
	Nonce     []byte        `json:"nonce"`
	// Activated says the nonce was derived from an answered challenge.
	Activated bool      `json:"activated"`
	Quote     tpm.Quote `json:"quote"`
}

// EndorsementKey is the TPM's identity.
type EndorsementKey struct {
	Kind string `json:"kind"` // "rsa-2048" or "ecc-p256"
	// PublicKey is the SubjectPublicKeyInfo DER of the key.
	PublicKey []byte `json:"public_key"`
	// Certificate is the manufacturer's DER certificate from TPM NV, if
	// the TPM has one; Chain holds any intermediates stored beside it.
	Certificate []byte   `json:"certificate,omitempty"`
	Chain       [][]byte `json:"chain,omitempty"`
}

// ImportKey is the key secrets are sealed to, and the AK's certification
// of it with the enrollment's nonce.
type ImportKey struct {
	// PublicKey is the SubjectPublicKeyInfo DER of the key, of the EK's
	// kind; its public area is the import key template with this key.
	PublicKey     []byte                     `json:"public_key"`
	Certification tpm.ImportKeyCertification `json:"certification"`
}

// CheckID reports whether id is a valid custodian ID (see package ids).
func CheckID(id string) error { return ids.CheckCustodian(id) }

// Parse decodes an enrollment strictly. It does not verify it.
func Parse(data []byte) (*Enrollment, error) {
	var e Enrollment
	if err := strictjson.Decode(data, &e, MaxSize); err != nil {
		return nil, fmt.Errorf("enrollment: %w", err)
	}
	if e.Version == 1 {
		return nil, errors.New("enrollment: version 1 names no import key, and what was sealed for it can be taken out of the TPM; enroll the device again and run the ceremony again")
	}
	if e.Version != Version {
		return nil, fmt.Errorf("enrollment: unsupported version %d (want %d)", e.Version, Version)
	}
	return &e, nil
}

// bindingNonce is the quote nonce of an activated enrollment: it commits
// to the challenge secret and to the identity the device claims, so the
// answer to one challenge cannot be reused under another custodian ID.
func bindingNonce(secret []byte, custodianID string) []byte {
	h := sha256.New()
	h.Write([]byte("custodian enrollment v1\x00"))
	h.Write([]byte(custodianID))
	h.Write([]byte{0})
	h.Write(secret)
	return h.Sum(nil)
}

func randomNonce() ([]byte, error) {
	n := make([]byte, 32)
	_, err := rand.Read(n)
	return n, err
}

var errNoChallenge = errors.New("no challenge")
