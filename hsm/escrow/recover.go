package escrow

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cloudflare/circl/secretsharing"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/recipient"
)

// BadShareError names the custodians whose packages did not yield a valid
// share, each with the reason.
type BadShareError struct {
	Custodians map[string]string // custodian ID → reason
}

func (e *BadShareError) Error() string {
	var parts []string
	for _, id := range slices.Sorted(maps.Keys(e.Custodians)) {
		parts = append(parts, fmt.Sprintf("%s: %s", id, e.Custodians[id]))
	}
	return "bad release from " + strings.Join(parts, "; ")
}

// ErrNotEnoughShares means fewer valid shares than the threshold, or, for
// an envelope of a scoped key ID, fewer valid partials.
var ErrNotEnoughShares = errors.New("not enough valid shares to recover the key")

// notEnoughPartials is ErrNotEnoughShares in the words of scoped mode,
// which has partials and no shares to speak of.
type notEnoughPartials struct{ valid, needed int }

func (e *notEnoughPartials) Error() string {
	return fmt.Sprintf("not enough valid partials to open this envelope: %d valid, %d needed", e.valid, e.needed)
}

func (e *notEnoughPartials) Is(target error) bool { return target == ErrNotEnoughShares }

// Recover opens the release packages with the agency's identity, checks
// each share against the commitments, and rebuilds the escrow key. It
// refuses packages for another key ID, from custodians not in the escrow
// file, and two packages for one share. It succeeds when at least the
// threshold of shares are valid, and reports the bad ones in any case.
func Recover(id *recipient.Identity, pub *Public, releases []*Release) (*Key, error) {
	if pub.Mode != ModeShare {
		return nil, fmt.Errorf("key ID %s is %s: its escrow key is never rebuilt; open each envelope its warrant named with custodian escrow open --release", pub.KeyID, pub.Mode)
	}
	commitments, err := pub.commitments()
	if err != nil {
		return nil, fmt.Errorf("the escrow file of key ID %s is damaged (%v); use the file the ceremony wrote", pub.KeyID, err)
	}
	bad := &BadShareError{Custodians: map[string]string{}}
	var good []secretsharing.Share
	seen := map[int]bool{}
	for _, r := range releases {
		c, err := checkRelease(pub, r, seen)
		if err != nil {
			return nil, err
		}
		share, err := openShare(id, pub, commitments, c, r)
		if err != nil {
			bad.Custodians[r.CustodianID] = err.Error()
			continue
		}
		good = append(good, share)
	}
	if len(good) < pub.Threshold {
		err := fmt.Errorf("%w: %d valid, %d needed", ErrNotEnoughShares, len(good), pub.Threshold)
		if len(bad.Custodians) > 0 {
			err = errors.Join(err, bad)
		}
		return nil, err
	}
	key, err := combine(pub, good)
	if err != nil {
		return nil, err
	}
	if len(bad.Custodians) > 0 {
		return key, bad
	}
	return key, nil
}

// checkRelease refuses a package that does not belong to this recovery.
func checkRelease(pub *Public, r *Release, seen map[int]bool) (*Custodian, error) {
	if r.KeyID != pub.KeyID {
		return nil, fmt.Errorf("the release from %s is for key ID %q, not %q", r.CustodianID, r.KeyID, pub.KeyID)
	}
	if r.Mode != pub.Mode {
		return nil, fmt.Errorf("the release from %s is a %s-mode release; key ID %s is in %s mode", r.CustodianID, r.Mode, pub.KeyID, pub.Mode)
	}
	c, ok := pub.Custodian(r.CustodianID)
	if !ok {
		return nil, fmt.Errorf("%s is not a custodian of key ID %s", r.CustodianID, pub.KeyID)
	}
	if r.Index != c.Index {
		return nil, fmt.Errorf("the release from %s claims share %d; its share is %d", r.CustodianID, r.Index, c.Index)
	}
	if seen[c.Index] {
		return nil, fmt.Errorf("two releases of share %d (%s)", c.Index, c.ID)
	}
	seen[c.Index] = true
	if err := pub.checkWitnessed(r); err != nil {
		return nil, err
	}
	return c, nil
}

func openShare(id *recipient.Identity, pub *Public, commitments secretsharing.SecretCommitment, c *Custodian, r *Release) (secretsharing.Share, error) {
	value, err := id.Open(ShareInfo(r.WarrantDigest, c.ID, pub.KeyID, c.Index), r.SealedShare)
	if err != nil {
		return secretsharing.Share{}, errors.New("the package does not open with this identity")
	}
	defer clear(value)
	if !pub.verifyShare(commitments, c.Index, value) {
		return secretsharing.Share{}, ErrBadShare
	}
	s := g.NewScalar()
	if err := s.UnmarshalBinary(value); err != nil {
		return secretsharing.Share{}, err
	}
	return secretsharing.Share{ID: g.NewScalar().SetUint64(uint64(c.Index)), Value: s}, nil
}

// combine interpolates the secret and checks it against the public key.
func combine(pub *Public, shares []secretsharing.Share) (*Key, error) {
	secret, err := secretsharing.Recover(uint(pub.Threshold-1), shares)
	if err != nil {
		return nil, err
	}
	raw, err := secret.MarshalBinary()
	if err != nil {
		return nil, err
	}
	key, err := newKey(pub.KeyID, raw)
	if err != nil {
		return nil, err
	}
	if !equalPoint(key.PublicKey(), pub.PublicKey) {
		return nil, errors.New("the recovered key does not match the escrow public key")
	}
	return key, nil
}

// keyPrefix starts the one-line text form of a recovered escrow key.
const keyPrefix = "CUSTODIAN-ESCROW-KEY-V1"

// ParseKey reads a recovered key file: "CUSTODIAN-ESCROW-KEY-V1:<key
// ID>:<base64url scalar>".
func ParseKey(s string) (*Key, error) {
	parts := strings.Split(strings.TrimSpace(s), ":")
	if len(parts) < 3 || parts[0] != keyPrefix {
		return nil, errors.New("not an escrow key file")
	}
	keyID := strings.Join(parts[1:len(parts)-1], ":")
	if err := ids.CheckKeyID(keyID); err != nil {
		return nil, err
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[len(parts)-1])
	if err != nil {
		return nil, errors.New("escrow key: bad encoding")
	}
	return newKey(keyID, raw)
}
