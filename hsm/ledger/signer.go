package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2/transport"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/tpm"
)

// SigningKey is the checkpoint signing key as the appliance stores it: the
// Ed25519 seed sealed to the device's import key, the image's PCR policy and its
// security version, so that only the approved image on this TPM, while
// the TPM's version floor allows it, can sign checkpoints; and the public
// verifier key ("name+hash+base64") that anyone may have.
type SigningKey struct {
	Sealed   *tpm.Blob
	Verifier string
}

// NewSigningKey makes a checkpoint key named name (the log's origin) and
// seals its private half to key (the device's import key) under pcrs and
// security version.
func NewSigningKey(name string, key *tpm.ImportKey, pcrs tpm.PCRValues, version uint64) (*SigningKey, error) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return nil, err
	}
	seed, err := seedOf(skey)
	if err != nil {
		return nil, err
	}
	blob, err := tpm.Seal(key, pcrs, version, seed)
	if err != nil {
		return nil, err
	}
	return &SigningKey{Sealed: blob, Verifier: vkey}, nil
}

// seedOf extracts the Ed25519 seed from a note private key string,
// "PRIVATE+KEY+name+hash+base64(0x01 || seed)".
func seedOf(skey string) ([]byte, error) {
	// The name cannot contain '+'; the base64 key can.
	parts := strings.SplitN(skey, "+", 5)
	if len(parts) != 5 {
		return nil, errors.New("unexpected note private key format")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, errors.New("unexpected note private key format")
	}
	return raw[1:], nil
}

// Open unseals the key in the TPM (the seed crosses the bus encrypted,
// tpm.Unseal, and lives only in this process) and returns the note signer and the
// state key (Config.StateKey), derived from the same seed under its own
// label: both exist only where this TPM runs the approved image, and only
// for the key this TPM anchored at ledger init (checkAnchor). Anyone can
// seal a key of their own to the import key and the approved PCRs; only the
// anchored one opens.
func (k *SigningKey) Open(t transport.TPM) (note.Signer, []byte, error) {
	return k.open(t, true)
}

// OpenUnanchored is Open without the anchor check, for ledger init alone:
// the key is anchored only once its ledger exists, so that an init
// interrupted before the anchor can check that ledger and finish. Nothing
// else may use it: an unanchored key proves nothing about who made it.
func (k *SigningKey) OpenUnanchored(t transport.TPM) (note.Signer, []byte, error) {
	return k.open(t, false)
}

func (k *SigningKey) open(t transport.TPM, anchored bool) (note.Signer, []byte, error) {
	seed, err := tpm.Unseal(t, k.Sealed)
	if err != nil {
		return nil, nil, fmt.Errorf("unsealing the checkpoint key: %w", err)
	}
	defer clear(seed)
	signer, err := newSigner(k.Verifier, seed)
	if err != nil {
		return nil, nil, err
	}
	// newSigner checked that the verifier key is the seed's.
	if anchored {
		if err := checkAnchor(t, k.Verifier); err != nil {
			return nil, nil, err
		}
	}
	stateKey, err := deriveStateKey(seed)
	if err != nil {
		return nil, nil, err
	}
	return signer, stateKey, nil
}

// ed25519Signer implements note.Signer with a seed and the name and key
// hash of its public verifier key.
type ed25519Signer struct {
	name string
	hash uint32
	key  ed25519.PrivateKey
}

func newSigner(vkey string, seed []byte) (*ed25519Signer, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, errors.New("checkpoint key seed has the wrong size")
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("checkpoint verifier key: %w", err)
	}
	key := ed25519.NewKeyFromSeed(seed)
	want, err := note.NewEd25519VerifierKey(v.Name(), key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	if want != vkey {
		return nil, errors.New("the unsealed checkpoint key does not match its verifier key")
	}
	return &ed25519Signer{name: v.Name(), hash: v.KeyHash(), key: key}, nil
}

func (s *ed25519Signer) Name() string    { return s.name }
func (s *ed25519Signer) KeyHash() uint32 { return s.hash }
func (s *ed25519Signer) Sign(msg []byte) ([]byte, error) {
	return ed25519.Sign(s.key, msg), nil
}
