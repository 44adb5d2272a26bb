package escrow

import (
	"bytes"
	"crypto/rand"
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
//	<the new image's policy.json>
//
// signed with the update key named in the escrow file. A custodian running
// the approved image reseals its share to the new policy's PCRs inside
// its own TPM session; the share is never written in the clear.
const updateHeader = "custodian update v1\n"

// maxUpdateSize caps an update note.
const maxUpdateSize = 128 << 10

// ErrBadUpdate wraps every reason an update is refused.
var ErrBadUpdate = errors.New("update refused")

// NewUpdateKey makes an update signing key named name; the private key
// stays with the escrow authority, the verifier key goes in escrow files.
func NewUpdateKey(name string) (private, verifier string, err error) {
	return note.GenerateKey(rand.Reader, name)
}

// SignUpdate signs a new policy with the authority's private update key.
func SignUpdate(privateKey string, p *bootpolicy.Policy) ([]byte, error) {
	signer, err := note.NewSigner(privateKey)
	if err != nil {
		return nil, err
	}
	data, err := p.Marshal()
	if err != nil {
		return nil, err
	}
	return note.Sign(&note.Note{Text: updateHeader + string(data)}, signer)
}

// OpenUpdate checks an update against the escrow file's update key and
// returns the new policy.
func (p *Public) OpenUpdate(signed []byte) (*bootpolicy.Policy, error) {
	policy, err := p.openUpdate(signed)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadUpdate, err)
	}
	return policy, nil
}

func (p *Public) openUpdate(signed []byte) (*bootpolicy.Policy, error) {
	if p.UpdateKey == "" {
		return nil, fmt.Errorf("key ID %s has no update key; a new ceremony is needed", p.KeyID)
	}
	if len(signed) > maxUpdateSize {
		return nil, errors.New("too large")
	}
	v, err := note.NewVerifier(p.UpdateKey)
	if err != nil {
		return nil, err
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("not signed by the update key of %s: %v", p.KeyID, err)
	}
	body, ok := strings.CutPrefix(n.Text, updateHeader)
	if !ok {
		return nil, errors.New("not a custodian update")
	}
	return bootpolicy.Parse([]byte(body))
}

// ErrScopedReseal: a scoped key's share never leaves the TPM, so the
// device cannot seal it again to a new image's policy.
var ErrScopedReseal = errors.New("a scoped key cannot be resealed on the device (its share never leaves the TPM); the escrow authority runs a new ceremony for the new image")

// Reseal opens the share of b in the TPM (under the current PCRs: the
// approved image) and seals it again, to the same TPM, under the PCRs of
// the policy in update. It returns the bundle for the new image, which
// carries the update as its authority.
func Reseal(t transport.TPM, b *Bundle, update []byte) (*Bundle, error) {
	if b.Escrow.Mode == ModeScoped {
		return nil, ErrScopedReseal
	}
	policy, err := b.Escrow.OpenUpdate(update)
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
	next, err := tpm.Seal(blob.EK, policy.PCRs, share)
	if err != nil {
		return nil, err
	}
	out := *b
	out.Escrow.PCRs = policy.PCRs.Clone()
	out.Blob = next.Marshal()
	out.Update = bytes.Clone(update)
	return &out, nil
}
