package escrow

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/secretsharing"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/tpm"
)

// Member is a custodian taking part in a ceremony: its ID, and the
// endorsement key (its identity) and import key (what its share is sealed
// to, certified by its AK) from its verified enrollment.
type Member struct {
	ID        string
	EK        *tpm.EK
	ImportKey *tpm.ImportKey
}

// Ceremony makes the escrow key for keyID, splits it so that threshold of
// the members' shares recover it, and seals each share to its member's
// import key (never to the EK, which TPM2_Rewrap opens) under pcrs and
// the image's security version (WithSecurityVersion, 1 by default) — in
// scoped mode (the default) as a TPM key, in share mode (WithMode) as
// sealed data.
// The key and the shares never leave this function unsealed.
func Ceremony(keyID string, threshold int, pcrs tpm.PCRValues, members []Member, opts ...Option) (*Public, []*Bundle, error) {
	custodians, err := checkCeremony(keyID, threshold, pcrs, members)
	if err != nil {
		return nil, nil, err
	}
	secret := g.RandomScalar(rand.Reader)
	defer secret.SetUint64(0)
	ss := secretsharing.New(rand.Reader, uint(threshold-1), secret)
	shares := ss.Share(uint(len(members)))
	pub := &Public{Version: Version, KeyID: keyID, Mode: DefaultMode, Threshold: threshold, PCRs: pcrs.Clone(), SecurityVersion: 1}
	for _, o := range opts {
		o(pub)
	}
	if err := tpm.CheckSecurityVersion(pub.SecurityVersion); err != nil {
		return nil, nil, err
	}
	if pub.Mode != ModeScoped {
		pub.ApprovalKey = nil // the update key alone serves share mode
	}
	if pub.Mode == ModeScoped && pub.UpdateKey != "" && pub.ApprovalKey == nil {
		return nil, nil, ErrNoApprovalKey
	}
	pub.Commitments = make([][]byte, 0, threshold)
	for _, c := range ss.CommitSecret() {
		b, err := c.MarshalBinary()
		if err != nil {
			return nil, nil, err
		}
		pub.Commitments = append(pub.Commitments, b)
	}
	pub.PublicKey = pub.Commitments[0]
	pub.Custodians = custodians // as checkCeremony named them: index i+1 for members[i]
	bundles := make([]*Bundle, len(members))
	for i, m := range members {
		index := i + 1 // circl numbers shares 1..n in order
		value, err := shares[i].Value.MarshalBinary()
		if err != nil {
			return nil, nil, err
		}
		if testHookShare != nil {
			testHookShare(index, value)
		}
		blob, proofKey, err := sealShare(pub, m.ImportKey, value)
		clear(value)
		shares[i].Value.SetUint64(0)
		if err != nil {
			return nil, nil, fmt.Errorf("sealing the share of %s: %w", m.ID, err)
		}
		pub.Custodians[i].ProofKey = proofKey
		bundles[i] = &Bundle{Version: Version, CustodianID: m.ID, Index: index, Blob: blob}
	}
	if err := pub.check(); err != nil {
		return nil, nil, fmt.Errorf("ceremony produced an inconsistent escrow file: %w", err)
	}
	for _, b := range bundles {
		b.Escrow = *pub
	}
	return pub, bundles, nil
}

// sealShare seals a share for one TPM: in share mode as sealed data
// (tpm.Seal), in scoped mode as a key that never leaves the TPM
// (tpm.SealScoped), with the proof key its partials are checked against.
func sealShare(pub *Public, key *tpm.ImportKey, value []byte) (blob, proofKey []byte, err error) {
	if pub.Mode == ModeScoped {
		k, err := tpm.SealScoped(key, pub.PCRs, pub.SecurityVersion, value, pub.approver())
		if err != nil {
			return nil, nil, err
		}
		proofKey, err := tpm.ProofKey(value)
		return k.Marshal(), proofKey, err
	}
	b, err := tpm.Seal(key, pub.PCRs, pub.SecurityVersion, value)
	if err != nil {
		return nil, nil, err
	}
	return b.Marshal(), nil, nil
}

// ErrNoApprovalKey: a scoped ceremony was given an update key without an
// approval key, so its keys could never follow that key's updates.
var ErrNoApprovalKey = errors.New("the update key names no approval key, so scoped keys could not follow its updates; make a new one with custodian update keygen")

// testHookShare, set only by tests, sees each share value so that a test
// can search the TPM bus for it.
var testHookShare func(index int, value []byte)

// Option sets an optional part of the escrow file.
type Option func(*Public)

// WithMode sets the key ID's mode, ModeScoped (DefaultMode) or ModeShare.
func WithMode(mode string) Option {
	return func(p *Public) { p.Mode = mode }
}

// WithSecurityVersion sets the security version of the image the shares
// are sealed to (policy.json's security_version).
func WithSecurityVersion(v uint64) Option {
	return func(p *Public) { p.SecurityVersion = v }
}

// WithUpdateKey names the authority's update key in the escrow file, as
// ParseUpdatePublic reads it: the signed-note verifier key, and the
// approval key through which a scoped key ID's keys follow its updates.
func WithUpdateKey(verifier string, approvalKey []byte) Option {
	return func(p *Public) { p.UpdateKey, p.ApprovalKey = verifier, approvalKey }
}

// checkCeremony refuses what would make a weak or ambiguous key: fewer
// than two needed shares, more needed than exist, a custodian or TPM
// twice, or a PCR policy that protects nothing. It returns the members
// as the escrow file lists them, without proof keys.
func checkCeremony(keyID string, threshold int, pcrs tpm.PCRValues, members []Member) ([]Custodian, error) {
	if err := ids.CheckKeyID(keyID); err != nil {
		return nil, err
	}
	if err := checkThreshold(threshold, len(members)); err != nil {
		return nil, err
	}
	if err := pcrs.Check(); err != nil {
		return nil, err
	}
	custodians := make([]Custodian, len(members))
	for i, m := range members {
		if m.EK == nil || m.ImportKey == nil {
			return nil, fmt.Errorf("custodian %s has no endorsement or import key: verify its enrollment (enroll it again if it is of version 1)", m.ID)
		}
		custodians[i] = Custodian{ID: m.ID, Index: i + 1, EKName: m.EK.Name(), ImportKeyName: m.ImportKey.Name()}
	}
	if err := checkCustodians(custodians); err != nil {
		return nil, err
	}
	return custodians, nil
}

// Marshal encodes the escrow file as indented JSON.
func (p *Public) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(p, "", "  ")
	return append(data, '\n'), err
}
