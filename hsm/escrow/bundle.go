package escrow

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/tpm"
)

// Bundle is what one custodian receives from a ceremony: its share sealed
// to its TPM and the PCR policy, with the escrow file it belongs to.
type Bundle struct {
	Version     int    `json:"version"`
	CustodianID string `json:"custodian_id"`
	Index       int    `json:"index"`
	Blob        []byte `json:"blob"` // a tpm.Blob
	Escrow      Public `json:"escrow"`
	// Update, on a resealed bundle, is the signed update that moved its
	// PCR policy away from the ceremony's; Escrow.PCRs is then the
	// update's.
	Update []byte `json:"update,omitempty"`
	// Approval, on a scoped bundle that followed an update, is the
	// approval key's signature of Escrow.PCRs (tpm.Approval).
	Approval []byte `json:"approval,omitempty"`
}

// Provisioning errors a device acts on.
var (
	ErrOtherCustodian = errors.New("the bundle is for another custodian")
	ErrOtherTPM       = errors.New("the bundle is sealed to another TPM")
	ErrBadShare       = errors.New("the share does not match the escrow commitments")
)

// ParseBundle decodes a bundle strictly and checks it against its own
// escrow file.
func ParseBundle(data []byte) (*Bundle, error) {
	var b Bundle
	if err := strictjson.Decode(data, &b, maxFileSize); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if err := b.check(); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return &b, nil
}

func (b *Bundle) check() error {
	if b.Version != Version {
		return fmt.Errorf("unsupported version %d", b.Version)
	}
	if err := b.Escrow.check(); err != nil {
		return err
	}
	if b.Update != nil {
		policy, approval, err := b.Escrow.OpenUpdate(b.Update)
		if err != nil {
			return err
		}
		if !policy.PCRs.Equal(b.Escrow.PCRs) || policy.SecurityVersion != b.Escrow.SecurityVersion {
			return errors.New("the bundle's PCRs or security version are not its update's")
		}
		if b.Escrow.Mode == ModeScoped && !bytes.Equal(approval, b.Approval) {
			return errors.New("the bundle's approval is not its update's")
		}
	} else if b.Approval != nil {
		return errors.New("an approval without the update it came with")
	}
	if b.Approval != nil && (b.Escrow.Mode != ModeScoped || b.Escrow.ApprovalKey == nil) {
		return errors.New("an approval belongs only to a scoped bundle whose escrow file names an approval key")
	}
	c, ok := b.Escrow.Custodian(b.CustodianID)
	if !ok || c.Index != b.Index {
		return fmt.Errorf("custodian %s with share %d is not in the escrow file", b.CustodianID, b.Index)
	}
	key, pcrs, version, err := b.sealedTo()
	if err != nil {
		return err
	}
	if !bytes.Equal(key.Name(), c.ImportKeyName) {
		return errors.New("the sealed share is for another TPM than the escrow file names")
	}
	// A scoped key keeps the ceremony's PCRs and version; after an update
	// the bundle's approval (checked with the update) carries the new ones.
	same := pcrs.Equal(b.Escrow.PCRs) && version == b.Escrow.SecurityVersion
	if !same && (b.Escrow.Mode != ModeScoped || b.Approval == nil) {
		return errors.New("the sealed share's PCR policy or security version differs from the escrow file's")
	}
	return nil
}

// ScopedApproval is the approval a scoped bundle's key works under, or nil
// for the key's own PCRs.
func (b *Bundle) ScopedApproval() *tpm.Approval {
	if b.Approval == nil {
		return nil
	}
	return &tpm.Approval{PCRs: b.Escrow.PCRs, Version: b.Escrow.SecurityVersion, Signature: b.Approval}
}

// sealedTo parses the blob as the escrow file's mode says and returns the
// import key, PCR values and security version it is sealed to. A scoped key's
// public point must be the share's commitment.
func (b *Bundle) sealedTo() (*tpm.ImportKey, tpm.PCRValues, uint64, error) {
	if b.Escrow.Mode != ModeScoped {
		blob, err := tpm.ParseBlob(b.Blob)
		if err != nil {
			return nil, nil, 0, err
		}
		return blob.Key, blob.PCRs, blob.Version, nil
	}
	k, err := tpm.ParseScopedKey(b.Blob)
	if err != nil {
		return nil, nil, 0, err
	}
	if !equalApprover(k.Approver, b.Escrow.approver()) {
		return nil, nil, 0, errors.New("the scoped key's approver is not the escrow file's approval key")
	}
	want, err := b.Escrow.ShareCommitment(b.Index)
	if err != nil {
		return nil, nil, 0, err
	}
	if !equalPoint(k.PublicKey(), want) {
		return nil, nil, 0, errors.New("the scoped key is not the share the escrow file commits to")
	}
	return k.Key, k.PCRs, k.Version, nil
}

// Marshal encodes the bundle as indented JSON.
func (b *Bundle) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(b, "", "  ")
	return append(data, '\n'), err
}

// Provision checks that a bundle belongs on this device and works here: it
// is for custodianID and for key (the device's enrolled import key), its share opens
// in the TPM under the current PCRs (for a scoped key: computes and proves
// a partial), and the share matches the escrow commitments. The share is
// checked and forgotten; nothing is stored.
func Provision(t transport.TPM, b *Bundle, custodianID string, key *tpm.ImportKey) error {
	if b.CustodianID != custodianID {
		return fmt.Errorf("%w (%s, this device is %s)", ErrOtherCustodian, b.CustodianID, custodianID)
	}
	sealedTo, _, _, err := b.sealedTo()
	if err != nil {
		return err
	}
	if !bytes.Equal(sealedTo.Name(), key.Name()) {
		return ErrOtherTPM
	}
	if b.Escrow.Mode == ModeScoped {
		return provisionScoped(t, b)
	}
	blob, err := tpm.ParseBlob(b.Blob)
	if err != nil {
		return err
	}
	share, err := tpm.Unseal(t, blob)
	if err != nil {
		return err
	}
	defer clear(share)
	if !b.Escrow.VerifyShare(b.Index, share) {
		return ErrBadShare
	}
	return nil
}

// provisionScoped has the TPM compute the partial of G, which must be the
// share's commitment s_i·G, with a proof against the escrow file's proof
// key: the key works here and is the share the escrow file names.
func provisionScoped(t transport.TPM, b *Bundle) error {
	k, err := tpm.ParseScopedKey(b.Blob)
	if err != nil {
		return err
	}
	c, _ := b.Escrow.Custodian(b.CustodianID)
	want, err := b.Escrow.ShareCommitment(b.Index)
	if err != nil {
		return err
	}
	gen := g.Generator()
	point, err := gen.MarshalBinary()
	if err != nil {
		return err
	}
	partials, err := tpm.Partials(t, k, [][]byte{point}, b.ScopedApproval())
	if err != nil {
		return err
	}
	got, err := tpm.VerifyPartial(c.ProofKey, point, &partials[0])
	if err != nil || !equalPoint(got, want) {
		return ErrBadShare
	}
	return nil
}

func equalApprover(a, b *ecdsa.PublicKey) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}
