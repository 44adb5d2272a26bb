package escrow

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/tpm"
)

// An update is the escrow authority's signed approval of a new image: a
// C2SP signed note whose text is
//
//	custodian update v1
//	approval <base64 ASN.1 ECDSA signature>
//	<the new image's policy.json>
//
// signed with the update key named in the escrow file. A custodian running
// the approved image reseals a share-mode share to the new policy's PCRs
// inside its own TPM session; the share is never written in the clear. A
// scoped key is not resealed: the approval line, the update key's P-256
// approval key signing the new PCRs and security version
// (tpm.ApprovalDigest), lets the TPM accept the new image for it
// (tpm.Approval). Notes without the line are accepted for share-mode keys.
// The policy's security_version is the version the share or approval is
// bound to; an update to a lower version than a bundle's is refused.
const (
	updateHeader   = "custodian update v1\n"
	approvalPrefix = "approval "
)

// maxUpdateSize caps an update note.
const maxUpdateSize = 128 << 10

// ErrBadUpdate wraps every reason an update is refused.
var ErrBadUpdate = errors.New("update refused")

// NewUpdateKey makes an update signing key named name; the private key
// stays with the escrow authority. The public part, for ceremonies, is the
// signed-note verifier key on its first line, then a note signed by the
// same key that names the approval key derived from the same secret:
//
//	custodian approval key v1
//	<base64 PKIX P-256 key>
//
// so that the approval key cannot be swapped without the update key.
func NewUpdateKey(name string) (private, public string, err error) {
	private, verifier, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", err
	}
	approver, err := approvalKey(private)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKIXPublicKey(&approver.PublicKey)
	if err != nil {
		return "", "", err
	}
	signer, err := note.NewSigner(private)
	if err != nil {
		return "", "", err
	}
	signed, err := note.Sign(&note.Note{Text: approvalKeyHeader + base64.StdEncoding.EncodeToString(der) + "\n"}, signer)
	if err != nil {
		return "", "", err
	}
	return private, verifier + "\n" + string(signed), nil
}

const approvalKeyHeader = "custodian approval key v1\n"

// ParseUpdatePublic reads the public part of an update key: the verifier
// key, and the approval key (PKIX DER) if the file names one, checked
// against the verifier key's signature.
func ParseUpdatePublic(text string) (verifier string, approvalKeyDER []byte, err error) {
	verifier, signed, _ := strings.Cut(strings.TrimSpace(text)+"\n", "\n")
	v, err := note.NewVerifier(verifier)
	if err != nil {
		return "", nil, fmt.Errorf("update key: %w", err)
	}
	if signed == "" {
		return verifier, nil, nil
	}
	n, err := note.Open([]byte(signed), note.VerifierList(v))
	if err != nil {
		return "", nil, fmt.Errorf("update key: the approval key is not signed by the update key: %v", err)
	}
	b64, ok := strings.CutPrefix(n.Text, approvalKeyHeader)
	der, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(b64, "\n"))
	if !ok || err != nil {
		return "", nil, errors.New("update key: the signed note does not name an approval key")
	}
	if _, err := tpm.ParseApprover(der); err != nil {
		return "", nil, err
	}
	return verifier, der, nil
}

// approvalKey derives the P-256 approval key from the update key's secret,
// so that one secret signs both the note and the TPM's approvals.
func approvalKey(privateKey string) (*ecdsa.PrivateKey, error) {
	fields := strings.SplitN(privateKey, "+", 5)
	if len(fields) != 5 || fields[0] != "PRIVATE" || fields[1] != "KEY" {
		return nil, errors.New("not a signed-note private key")
	}
	raw, err := base64.StdEncoding.DecodeString(fields[4])
	if err != nil || len(raw) != 33 || raw[0] != 1 { // 1: Ed25519
		return nil, errors.New("not an Ed25519 signed-note private key")
	}
	d := g.HashToScalar(raw[1:], []byte("custodian scoped approval key v1"))
	defer d.SetUint64(0)
	scalar, err := d.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(scalar)
	return ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar)
}

// SignUpdate signs a new policy with the authority's private update key,
// with the approval of its PCRs for scoped keys.
func SignUpdate(privateKey string, p *bootpolicy.Policy) ([]byte, error) {
	signer, err := note.NewSigner(privateKey)
	if err != nil {
		return nil, err
	}
	data, err := p.Marshal()
	if err != nil {
		return nil, err
	}
	approver, err := approvalKey(privateKey)
	if err != nil {
		return nil, err
	}
	digest, err := tpm.ApprovalDigest(p.PCRs, p.SecurityVersion)
	if err != nil {
		return nil, err
	}
	sig, err := ecdsa.SignASN1(rand.Reader, approver, digest)
	if err != nil {
		return nil, err
	}
	text := updateHeader + approvalPrefix + base64.StdEncoding.EncodeToString(sig) + "\n" + string(data)
	return note.Sign(&note.Note{Text: text}, signer)
}

// OpenUpdate checks an update against the escrow file's update key and
// returns the new policy and, for an escrow file with an approval key, the
// note's approval of the new PCRs, which must verify (nil otherwise).
func (p *Public) OpenUpdate(signed []byte) (*bootpolicy.Policy, []byte, error) {
	policy, approval, err := p.openUpdate(signed)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadUpdate, err)
	}
	return policy, approval, nil
}

func (p *Public) openUpdate(signed []byte) (*bootpolicy.Policy, []byte, error) {
	if p.UpdateKey == "" {
		return nil, nil, fmt.Errorf("key ID %s has no update key; a new ceremony is needed", p.KeyID)
	}
	if len(signed) > maxUpdateSize {
		return nil, nil, errors.New("too large")
	}
	v, err := note.NewVerifier(p.UpdateKey)
	if err != nil {
		return nil, nil, err
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return nil, nil, fmt.Errorf("not signed by the update key of %s: %v", p.KeyID, err)
	}
	body, ok := strings.CutPrefix(n.Text, updateHeader)
	if !ok {
		return nil, nil, errors.New("not a custodian update")
	}
	var approval []byte
	if line, rest, ok := strings.Cut(body, "\n"); ok && strings.HasPrefix(line, approvalPrefix) {
		if approval, err = base64.StdEncoding.DecodeString(strings.TrimPrefix(line, approvalPrefix)); err != nil {
			return nil, nil, errors.New("the approval line is not base64")
		}
		body = rest
	}
	policy, err := bootpolicy.Parse([]byte(body))
	if err != nil {
		return nil, nil, err
	}
	if p.ApprovalKey == nil {
		return policy, nil, nil // nothing here can use or check an approval
	}
	if err := p.CheckApproval(policy.PCRs, policy.SecurityVersion, approval); err != nil {
		return nil, nil, err
	}
	return policy, approval, nil
}

// CheckApproval checks, in software, that sig is the escrow file's
// approval key's approval of pcrs and version (the TPM checks it again
// before use).
func (p *Public) CheckApproval(pcrs tpm.PCRValues, version uint64, sig []byte) error {
	if p.ApprovalKey == nil {
		return errors.New("the escrow file names no approval key")
	}
	key, err := tpm.ParseApprover(p.ApprovalKey)
	if err != nil {
		return err
	}
	digest, err := tpm.ApprovalDigest(pcrs, version)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(key, digest, sig) {
		return errors.New("the approval of the new PCRs and security version does not verify with the escrow file's approval key")
	}
	return nil
}

// ErrScopedReseal: a scoped key without an approval key cannot follow an
// update: its share never leaves the TPM, and its policy names only the
// ceremony's PCRs.
var ErrScopedReseal = errors.New("this scoped key names no approval key, so it cannot follow an image update (its share never leaves the TPM); the escrow authority runs a new ceremony for the new image")

// ErrOlderUpdate: the update's image has a lower security version than
// the bundle's: following it would be a downgrade.
var ErrOlderUpdate = errors.New("the update's image has a lower security version than this share's; an update never goes back to an older image")

// openNewer opens an update for b and refuses one whose security version
// is below b's.
func (b *Bundle) openNewer(update []byte) (*bootpolicy.Policy, []byte, error) {
	policy, approval, err := b.Escrow.OpenUpdate(update)
	if err != nil {
		return nil, nil, err
	}
	if policy.SecurityVersion < b.Escrow.SecurityVersion {
		return nil, nil, fmt.Errorf("%w: %w (version %d, the share's %d)", ErrBadUpdate, ErrOlderUpdate,
			policy.SecurityVersion, b.Escrow.SecurityVersion)
	}
	return policy, approval, nil
}

// Reseal opens the share of b in the TPM (under the current PCRs: the
// approved image) and seals it again, to the same TPM, under the PCRs and
// security version of the policy in update. It returns the bundle for the
// new image, which carries the update as its authority.
func Reseal(t transport.TPM, b *Bundle, update []byte) (*Bundle, error) {
	if b.Escrow.Mode == ModeScoped {
		return approveScoped(b, update)
	}
	policy, _, err := b.openNewer(update)
	if err != nil {
		return nil, err
	}
	blob, err := tpm.ParseBlob(b.Blob)
	if err != nil {
		return nil, err
	}
	share, err := tpm.Unseal(t, blob)
	if err != nil {
		return nil, err
	}
	defer clear(share)
	if !b.Escrow.VerifyShare(b.Index, share) {
		return nil, ErrBadShare
	}
	next, err := tpm.Seal(blob.Key, policy.PCRs, policy.SecurityVersion, share)
	if err != nil {
		return nil, err
	}
	out := *b
	out.Escrow.PCRs = policy.PCRs.Clone()
	out.Escrow.SecurityVersion = policy.SecurityVersion
	out.Blob = next.Marshal()
	out.Update = bytes.Clone(update)
	return &out, nil
}

// approveScoped moves a scoped bundle to an update's PCRs: the key in the
// TPM is unchanged; the bundle carries the approval the TPM will check.
func approveScoped(b *Bundle, update []byte) (*Bundle, error) {
	if b.Escrow.ApprovalKey == nil {
		return nil, ErrScopedReseal
	}
	policy, approval, err := b.openNewer(update)
	if err != nil {
		return nil, err
	}
	out := *b
	out.Escrow.PCRs = policy.PCRs.Clone()
	out.Escrow.SecurityVersion = policy.SecurityVersion
	out.Approval = approval
	out.Update = bytes.Clone(update)
	return &out, nil
}
