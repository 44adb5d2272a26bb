package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"

	"github.com/custodian-project/custodian/hsm/ids"
)

// Key is a recovered escrow key for one key ID.
type Key struct {
	keyID string
	priv  *ecdh.PrivateKey
}

func newKey(keyID string, scalar []byte) (*Key, error) {
	priv, err := ecdh.P256().NewPrivateKey(scalar)
	if err != nil {
		return nil, fmt.Errorf("escrow key: %w", err)
	}
	return &Key{keyID: keyID, priv: priv}, nil
}

// KeyID is the key ID the key is for.
func (k *Key) KeyID() string { return k.keyID }

// PublicKey is s·G, uncompressed.
func (k *Key) PublicKey() []byte { return k.priv.PublicKey().Bytes() }

// String is the key file's content. It is the secret: write it 0600.
func (k *Key) String() string {
	return keyPrefix + ":" + k.keyID + ":" + base64.RawURLEncoding.EncodeToString(k.priv.Bytes())
}

func equalPoint(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

// The envelope suite: DHKEM(P-256) so a future custodian can compute its
// part of the decapsulation inside a TPM; ChaCha20-Poly1305 as for shares.
func envelopeSuite() (hpke.KEM, hpke.KDF, hpke.AEAD) {
	return hpke.DHKEM(ecdh.P256()), hpke.HKDFSHA256(), hpke.ChaCha20Poly1305()
}

// MaxEnvelopePlaintext caps what one envelope holds.
const MaxEnvelopePlaintext = 64 << 20

// Envelope encoding: magic "CUSTENV1", then uint16-prefixed key ID, target
// and HPKE encapsulated key, then the AEAD ciphertext to the end.
const envelopeMagic = "CUSTENV1"

// ErrEnvelope wraps every reason an envelope does not open.
var ErrEnvelope = errors.New("the envelope does not open")

func envelopeInfo(keyID, target string) []byte {
	return []byte("custodian envelope v1\x00" + keyID + "\x00" + target)
}

// Seal encrypts plaintext to the escrow public key of pub, for target.
func Seal(pub *Public, target string, plaintext []byte) ([]byte, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	if len(plaintext) > MaxEnvelopePlaintext {
		return nil, fmt.Errorf("%d bytes; an envelope holds at most %d", len(plaintext), MaxEnvelopePlaintext)
	}
	kem, kdf, aead := envelopeSuite()
	pk, err := kem.NewPublicKey(pub.PublicKey)
	if err != nil {
		return nil, err
	}
	enc, sender, err := hpke.NewSender(pk, kdf, aead, envelopeInfo(pub.KeyID, target))
	if err != nil {
		return nil, err
	}
	ct, err := sender.Seal(nil, plaintext)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte(envelopeMagic))
	for _, f := range [][]byte{[]byte(pub.KeyID), []byte(target), enc} {
		b.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes(f) })
	}
	b.AddBytes(ct)
	return b.Bytes()
}

// Envelope is a parsed envelope.
type Envelope struct {
	KeyID, Target string
	Enc           []byte // the HPKE encapsulated key: a P-256 point R
	ciphertext    []byte
}

// ParseEnvelope decodes an envelope's header.
func ParseEnvelope(data []byte) (*Envelope, error) {
	s := cryptobyte.String(data)
	var magic []byte
	var keyID, target, enc cryptobyte.String
	if !s.ReadBytes(&magic, len(envelopeMagic)) || string(magic) != envelopeMagic ||
		!s.ReadUint16LengthPrefixed(&keyID) || !s.ReadUint16LengthPrefixed(&target) ||
		!s.ReadUint16LengthPrefixed(&enc) || len(enc) != 65 || len(s) < 16 {
		return nil, fmt.Errorf("%w: not an escrow envelope", ErrEnvelope)
	}
	if err := ids.CheckKeyID(string(keyID)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	if err := checkTarget(string(target)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	return &Envelope{KeyID: string(keyID), Target: string(target), Enc: bytes.Clone(enc), ciphertext: s}, nil
}

// Open decrypts an envelope with a recovered key. The key must be for the
// envelope's key ID; the target is bound by the HPKE info, so an envelope
// whose header was edited does not open.
func Open(k *Key, data []byte) (*Envelope, []byte, error) {
	env, err := ParseEnvelope(data)
	if err != nil {
		return nil, nil, err
	}
	if env.KeyID != k.keyID {
		return nil, nil, fmt.Errorf("%w: it is for key ID %q, this key is for %q", ErrEnvelope, env.KeyID, k.keyID)
	}
	kem, kdf, aead := envelopeSuite()
	sk, err := kem.NewPrivateKey(k.priv.Bytes())
	if err != nil {
		return nil, nil, err
	}
	r, err := hpke.NewRecipient(env.Enc, sk, kdf, aead, envelopeInfo(env.KeyID, env.Target))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	pt, err := r.Open(nil, env.ciphertext)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: wrong key, or the envelope was altered", ErrEnvelope)
	}
	return env, pt, nil
}

func checkTarget(target string) error {
	if target == "" || len(target) > 256 {
		return errors.New("target: 1 to 256 bytes")
	}
	for _, r := range target {
		if r < 0x20 || r == 0x7f {
			return errors.New("target: no control characters")
		}
	}
	return nil
}
