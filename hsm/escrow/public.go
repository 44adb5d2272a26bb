package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/witness"
	"github.com/custodian-project/custodian/tpm"
)

// Version of the escrow file and bundle formats.
const Version = 1

// Modes of a key ID. In share mode a release hands out the custodian's
// share: whoever recovers t of them holds the key ID's whole escrow key. In
// scoped mode each share is a TPM key that never leaves the TPM, and a
// release is a partial decryption of each envelope the warrant names.
const (
	ModeShare  = "share"
	ModeScoped = "scoped"
	// DefaultMode is what a ceremony makes unless told otherwise: the
	// mode whose releases cannot reach beyond the envelopes a warrant names.
	DefaultMode = ModeScoped
)

// MaxCustodians caps n.
const MaxCustodians = 255

// maxFileSize caps escrow and bundle files.
const maxFileSize = 1 << 20

// Public is the escrow file, escrow-<key-id>.pub.json: everything public
// about one key ID.
type Public struct {
	Version   int    `json:"version"`
	KeyID     string `json:"key_id"`
	Mode      string `json:"mode"`
	PublicKey []byte `json:"public_key"` // s·G, uncompressed SEC1
	Threshold int    `json:"threshold"`  // shares needed to recover
	// Commitments are the Feldman commitments a_j·G of the sharing
	// polynomial's coefficients, uncompressed SEC1; the first is PublicKey.
	Commitments [][]byte      `json:"commitments"`
	Custodians  []Custodian   `json:"custodians"`
	PCRs        tpm.PCRValues `json:"pcrs"` // what the shares are sealed to
	// SecurityVersion is the security version of the image PCRs belong
	// to: the shares open only while the device's floor is at most it.
	SecurityVersion uint64 `json:"security_version"`
	// UpdateKey is the escrow authority's key (signed-note verifier key)
	// whose signed updates let custodians reseal their shares to a new
	// image's policy without a new ceremony. Empty: no updates.
	UpdateKey string `json:"update_key,omitempty"`
	// ApprovalKey, in scoped mode only, is the P-256 key (PKIX DER,
	// derived from the update key) whose approvals of an update's PCRs
	// the scoped keys' TPM policies accept. Without it a scoped key works
	// only under PCRs.
	ApprovalKey []byte `json:"approval_key,omitempty"`
	// Witnesses cosign the custodians' ledger checkpoints (C2SP
	// tlog-witness); WitnessQuorum of them must cosign the checkpoint a
	// release package carries before it leaves the appliance, and before
	// the agency accepts it. Witnesses listed need an explicit quorum;
	// none listed is quorum 0: packages are not witnessed.
	Witnesses     []witness.Witness `json:"witnesses,omitempty"`
	WitnessQuorum *int              `json:"witness_quorum,omitempty"`
}

// Custodian is one holder of a share.
type Custodian struct {
	ID     string `json:"id"`
	Index  int    `json:"index"`   // the share's x-coordinate, 1..n
	EKName []byte `json:"ek_name"` // the TPM the share is sealed to
	// ImportKeyName is the Name of that TPM's import key, certified by
	// its AK at enrollment: what the share is sealed to (never the EK).
	ImportKeyName []byte `json:"import_key_name"`
	// ProofKey, in scoped mode only, is s_i·B (tpm.ProofKey): what the
	// proofs of this custodian's partial decryptions are checked against.
	ProofKey []byte `json:"proof_key,omitempty"`
}

var g = group.P256

// ParsePublic decodes an escrow file strictly and checks it is coherent.
func ParsePublic(data []byte) (*Public, error) {
	var p Public
	if err := strictjson.Decode(data, &p, maxFileSize); err != nil {
		return nil, fmt.Errorf("escrow file: %w", err)
	}
	if err := p.check(); err != nil {
		return nil, fmt.Errorf("escrow file: %w", err)
	}
	return &p, nil
}

func (p *Public) check() error {
	if p.Version != Version || (p.Mode != ModeShare && p.Mode != ModeScoped) {
		return fmt.Errorf("unsupported version %d or mode %q", p.Version, p.Mode)
	}
	if err := p.checkProofKeys(); err != nil {
		return err
	}
	if err := ids.CheckKeyID(p.KeyID); err != nil {
		return err
	}
	n := len(p.Custodians)
	if err := checkThreshold(p.Threshold, n); err != nil {
		return err
	}
	if len(p.Commitments) != p.Threshold {
		return fmt.Errorf("%d commitments for threshold %d", len(p.Commitments), p.Threshold)
	}
	if _, err := p.commitments(); err != nil {
		return err
	}
	if !bytes.Equal(p.PublicKey, p.Commitments[0]) {
		return errors.New("the public key is not the first commitment")
	}
	if _, err := ecdh.P256().NewPublicKey(p.PublicKey); err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	if err := p.PCRs.Check(); err != nil {
		return err
	}
	if err := tpm.CheckSecurityVersion(p.SecurityVersion); err != nil {
		return err
	}
	if p.UpdateKey != "" {
		if _, err := note.NewVerifier(p.UpdateKey); err != nil {
			return fmt.Errorf("update key: %w", err)
		}
	}
	if err := p.checkApprovalKey(); err != nil {
		return err
	}
	if err := p.checkWitnesses(); err != nil {
		return err
	}
	return checkCustodians(p.Custodians)
}

// checkApprovalKey: an approval key only for a scoped key ID with an
// update key, and a P-256 one.
func (p *Public) checkApprovalKey() error {
	if p.ApprovalKey == nil {
		return nil
	}
	if p.Mode != ModeScoped || p.UpdateKey == "" {
		return errors.New("an approval key belongs only to a scoped key ID with an update key")
	}
	_, err := tpm.ParseApprover(p.ApprovalKey)
	return err
}

// approver is the parsed approval key, or nil.
func (p *Public) approver() *ecdsa.PublicKey {
	if p.ApprovalKey == nil {
		return nil
	}
	key, err := tpm.ParseApprover(p.ApprovalKey)
	if err != nil {
		return nil
	}
	return key
}

// checkProofKeys: every custodian of a scoped key has a proof key, and
// no custodian of a share-mode key has one.
func (p *Public) checkProofKeys() error {
	for _, c := range p.Custodians {
		switch {
		case p.Mode == ModeShare && c.ProofKey != nil:
			return fmt.Errorf("custodian %s: a proof key in share mode", c.ID)
		case p.Mode == ModeScoped && !validPoint(c.ProofKey):
			return fmt.Errorf("custodian %s: the proof key is not an uncompressed P-256 point", c.ID)
		}
	}
	return nil
}

func validPoint(b []byte) bool {
	e := g.NewElement()
	return len(b) == 65 && e.UnmarshalBinary(b) == nil && !e.IsIdentity()
}

// ShareCommitment is the public value s_i·G of the share with the given
// index: the Feldman commitments evaluated at the index.
func (p *Public) ShareCommitment(index int) ([]byte, error) {
	cs, err := p.commitments()
	if err != nil {
		return nil, err
	}
	x := g.NewScalar().SetUint64(uint64(index))
	acc := g.Identity()
	for j := len(cs) - 1; j >= 0; j-- { // Horner: ((C_{t-1}·x + C_{t-2})·x + …) + C_0
		acc = g.NewElement().Mul(acc, x)
		acc.Add(acc, cs[j])
	}
	return acc.MarshalBinary()
}

func checkThreshold(t, n int) error {
	if n < 2 || n > MaxCustodians {
		return fmt.Errorf("%d custodians; want 2 to %d", n, MaxCustodians)
	}
	if t < 2 || t > n {
		return fmt.Errorf("threshold %d: want 2 to n=%d (one custodian alone must never suffice)", t, n)
	}
	return nil
}

func checkCustodians(cs []Custodian) error {
	n := len(cs)
	seenID, seenIndex, seenEK := make(map[string]bool, n), make(map[int]bool, n), make(map[string]bool, n)
	for _, c := range cs {
		if err := ids.CheckCustodian(c.ID); err != nil {
			return err
		}
		if c.Index < 1 || c.Index > len(cs) {
			return fmt.Errorf("custodian %s: share index %d out of 1..%d", c.ID, c.Index, len(cs))
		}
		if len(c.ImportKeyName) == 0 {
			return fmt.Errorf("custodian %s: the escrow file names no import key, so its share was sealed to the endorsement key, which does not keep it in the TPM; enroll the devices again and run the ceremony again", c.ID)
		}
		if seenID[c.ID] || seenIndex[c.Index] || seenEK[string(c.EKName)] {
			return fmt.Errorf("custodian %s: ID, share index or TPM listed twice", c.ID)
		}
		seenID[c.ID], seenIndex[c.Index], seenEK[string(c.EKName)] = true, true, true
	}
	return nil
}

// commitments decodes the Feldman commitments as group elements.
func (p *Public) commitments() (secretsharing.SecretCommitment, error) {
	out := make(secretsharing.SecretCommitment, len(p.Commitments))
	for i, c := range p.Commitments {
		e := g.NewElement()
		if err := e.UnmarshalBinary(c); err != nil || e.IsIdentity() || len(c) != 65 {
			return nil, fmt.Errorf("commitment %d is not an uncompressed P-256 point", i)
		}
		out[i] = e
	}
	return out, nil
}

// Custodian returns the custodian with the given ID.
func (p *Public) Custodian(id string) (*Custodian, bool) {
	for i := range p.Custodians {
		if p.Custodians[i].ID == id {
			return &p.Custodians[i], true
		}
	}
	return nil, false
}

// VerifyShare checks a share value for the custodian with the given index
// against the commitments.
func (p *Public) VerifyShare(index int, value []byte) bool {
	c, err := p.commitments()
	if err != nil {
		return false
	}
	return p.verifyShare(c, index, value)
}

// verifyShare is VerifyShare with the commitments decoded once for many
// shares.
func (p *Public) verifyShare(c secretsharing.SecretCommitment, index int, value []byte) bool {
	v := g.NewScalar()
	if len(value) != 32 || v.UnmarshalBinary(value) != nil {
		return false
	}
	id := g.NewScalar().SetUint64(uint64(index))
	return secretsharing.Verify(uint(p.Threshold-1), secretsharing.Share{ID: id, Value: v}, c)
}

// Fingerprint identifies an escrow file: SHA-256 of its canonical form.
func (p *Public) Fingerprint() [32]byte {
	data, _ := p.Marshal()
	return sha256.Sum256(data)
}
