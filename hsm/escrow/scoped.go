package escrow

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
)

// ErrNotNamed means a release holds no partial for the envelope: the
// warrant it answers did not name that envelope.
var ErrNotNamed = errors.New("the release holds no partial for this envelope (the warrant did not name it)")

// OpenScoped opens one envelope of a scoped key ID from the custodians'
// release packages: it opens each package with the agency's identity,
// takes the partial for this envelope, checks its proof against the
// custodian's proof key, and combines t valid partials. It refuses
// packages of another key ID, mode or custodian set as Recover does, and
// names every custodian whose partial was missing or failed its proof
// (*BadShareError, returned beside the plaintext when enough remained).
func OpenScoped(id *recipient.Identity, pub *Public, releases []*Release, envelope []byte) (*Envelope, []byte, error) {
	if pub.Mode != ModeScoped {
		return nil, nil, fmt.Errorf("key ID %s is in %s mode: recover its key with Recover", pub.KeyID, pub.Mode)
	}
	env, err := ParseEnvelope(envelope)
	if err != nil {
		return nil, nil, err
	}
	bad := &BadShareError{Custodians: map[string]string{}}
	var good []PartialShare
	seen := map[int]bool{}
	for _, r := range releases {
		c, err := checkRelease(pub, r, seen)
		if err != nil {
			return nil, nil, err
		}
		p, err := openPartial(id, pub, c, r, env.Enc)
		if err != nil {
			bad.Custodians[c.ID] = err.Error()
			continue
		}
		good = append(good, PartialShare{Index: c.Index, Point: p})
	}
	if len(good) < pub.Threshold {
		err := fmt.Errorf("%w: %d valid partials for this envelope, %d needed", ErrNotEnoughShares, len(good), pub.Threshold)
		if len(bad.Custodians) > 0 {
			err = errors.Join(err, bad)
		}
		return nil, nil, err
	}
	dh, err := CombinePartials(good[:pub.Threshold])
	if err != nil {
		return nil, nil, err
	}
	env, pt, err := openWithDH(pub, env, dh)
	if err != nil {
		return nil, nil, err
	}
	if len(bad.Custodians) > 0 {
		return env, pt, bad
	}
	return env, pt, nil
}

// openPartial opens a scoped package and returns its verified partial for
// the envelope whose encapsulated key is enc.
func openPartial(id *recipient.Identity, pub *Public, c *Custodian, r *Release, enc []byte) ([]byte, error) {
	data, err := id.Open(PartialsInfo(r.WarrantDigest, c.ID, pub.KeyID, c.Index), r.SealedPartials)
	if err != nil {
		return nil, errors.New("the package does not open with this identity")
	}
	var partials []EnvelopePartial
	if err := strictjson.Decode(data, &partials, MaxReleaseSize); err != nil {
		return nil, fmt.Errorf("the package's partials do not decode: %v", err)
	}
	for _, p := range partials {
		if !bytes.Equal(p.Enc, enc) {
			continue
		}
		return tpm.VerifyPartial(c.ProofKey, enc, &p.Partial)
	}
	return nil, ErrNotNamed
}
