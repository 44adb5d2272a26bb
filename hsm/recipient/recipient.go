// Package recipient holds the requesting agency's HPKE (RFC 9180) key pair:
// the key a custodian seals a released share to.
//
// Contract:
//   - A public key is one line of text, "custodian-recipient-v1:KEM:KEY", where
//     KEM names the HPKE KEM (mlkem768x25519, the default hybrid post-quantum
//     KEM, or x25519 / mlkem768p256) and KEY is the RFC 9180
//     SerializePublicKey output in unpadded base64url. Anything else is refused:
//     other prefixes, unknown KEMs, padding, white space inside, wrong lengths.
//   - The identity (private key) is one line, "CUSTODIAN-IDENTITY-V1:KEM:KEY"
//     with SerializePrivateKey output. Store it like a password: the
//     command line writes it only to a new file with mode 0600.
//   - Sealed messages are uint16 big-endian len(enc) || enc || AEAD ciphertext,
//     single-shot HPKE base mode with HKDF-SHA256 and ChaCha20-Poly1305. The
//     caller's info string binds the context (warrant digest, custodian, key ID,
//     share index); Open fails unless it gets the same info.
package recipient

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/custodian-project/custodian/internal/bytecache"
)

const (
	publicPrefix   = "custodian-recipient-v1"
	identityPrefix = "CUSTODIAN-IDENTITY-V1"

	// DefaultKEM is the hybrid ML-KEM-768 + X25519 KEM: a share sealed today
	// stays sealed if a quantum computer later breaks X25519.
	DefaultKEM = "mlkem768x25519"

	// maxLine caps what ParsePublicKey and ParseIdentity read; the largest
	// supported public key (ML-KEM-768+P-256) is well under 2 KiB encoded.
	maxLine = 4096
)

// kems are the supported KEMs by the name used in the text formats.
var kems = map[string]func() hpke.KEM{
	"mlkem768x25519": hpke.MLKEM768X25519,
	"mlkem768p256":   hpke.MLKEM768P256,
	"x25519":         func() hpke.KEM { return hpke.DHKEM(ecdh.X25519()) },
}

// Suite choices: ChaCha20-Poly1305 because the Raspberry Pi 4 has no AES
// instructions, and a constant-time software AES is slow there.
func kdf() hpke.KDF   { return hpke.HKDFSHA256() }
func aead() hpke.AEAD { return hpke.ChaCha20Poly1305() }

// PublicKey is an agency's recipient key.
type PublicKey struct {
	kem  string
	pk   hpke.PublicKey
	line string // the one-line form, made once
}

// Identity is an agency's private key.
type Identity struct {
	kem string
	sk  hpke.PrivateKey
}

// Generate makes a new identity for the named KEM ("" means DefaultKEM).
func Generate(kem string) (*Identity, error) {
	if kem == "" {
		kem = DefaultKEM
	}
	newKEM, ok := kems[kem]
	if !ok {
		return nil, fmt.Errorf("unknown KEM %q; use mlkem768x25519, mlkem768p256 or x25519", kem)
	}
	sk, err := newKEM().GenerateKey()
	if err != nil {
		return nil, err
	}
	return &Identity{kem: kem, sk: sk}, nil
}

// Public returns the identity's public key.
func (id *Identity) Public() *PublicKey {
	return newPublicKey(id.kem, id.sk.PublicKey())
}

func newPublicKey(kem string, pk hpke.PublicKey) *PublicKey {
	return &PublicKey{kem: kem, pk: pk, line: publicPrefix + ":" + kem + ":" + base64.RawURLEncoding.EncodeToString(pk.Bytes())}
}

// String encodes the identity. It is the secret: write it only to a 0600 file.
func (id *Identity) String() string {
	b, err := id.sk.Bytes()
	if err != nil {
		// Every KEM in kems serializes its private keys.
		panic("recipient: private key does not serialize: " + err.Error())
	}
	return identityPrefix + ":" + id.kem + ":" + base64.RawURLEncoding.EncodeToString(b)
}

// String encodes the public key as its one-line form.
func (p *PublicKey) String() string { return p.line }

// Fingerprint names the key by the whole SHA-256 of its one-line form: 64
// hex digits in 16 groups of four. People compare it by eye or over the
// phone instead of the 1,600 characters of the key. All 256 bits are kept:
// whoever generates the agency's key could search for two keys sharing a
// shorter fingerprint (a collision costs the square root of its space),
// hand one to the audited vault and keep the other.
func (p *PublicKey) Fingerprint() string {
	return strings.Join(p.FingerprintRows(), " ")
}

// FingerprintRows is the fingerprint in two rows of eight groups, as the
// summary and agency keygen print it: each row fits a narrow console, and
// a group is never split across rows.
func (p *PublicKey) FingerprintRows() []string {
	sum := sha256.Sum256([]byte(p.String()))
	h := hex.EncodeToString(sum[:])
	groups := make([]string, 0, len(h)/4)
	for i := 0; i < len(h); i += 4 {
		groups = append(groups, h[i:i+4])
	}
	return []string{strings.Join(groups[:8], " "), strings.Join(groups[8:], " ")}
}

// KEM names the public key's KEM.
func (p *PublicKey) KEM() string { return p.kem }

// parsedKeys holds public keys already parsed, by their line: the ML-KEM
// key expansion costs more than the rest of a warrant's fields together,
// and an agency sends the same key with every warrant. A PublicKey does not
// change once made, so callers can share one.
var parsedKeys = bytecache.New[*PublicKey](256)

// ParsePublicKey reads the one-line public key form. One trailing newline
// is allowed, so the content of a .pub file parses as is.
func ParsePublicKey(s string) (*PublicKey, error) {
	if p, ok := parsedKeys.Get(s); ok {
		return p, nil
	}
	p, err := parsePublicKey(s)
	if err == nil {
		parsedKeys.Add(s, p)
	}
	return p, err
}

func parsePublicKey(s string) (*PublicKey, error) {
	kem, key, err := splitLine(s, publicPrefix)
	if err != nil {
		return nil, err
	}
	pk, err := kems[kem]().NewPublicKey(key)
	if err != nil {
		return nil, fmt.Errorf("recipient key is not a valid %s public key: %w", kem, err)
	}
	return newPublicKey(kem, pk), nil
}

// ParseIdentity reads the one-line identity form.
func ParseIdentity(s string) (*Identity, error) {
	kem, key, err := splitLine(s, identityPrefix)
	if err != nil {
		return nil, err
	}
	sk, err := kems[kem]().NewPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity is not a valid %s private key: %w", kem, err)
	}
	return &Identity{kem: kem, sk: sk}, nil
}

func splitLine(s, prefix string) (kem string, key []byte, err error) {
	if len(s) > maxLine {
		return "", nil, errors.New("key line too long")
	}
	s = strings.TrimSuffix(s, "\n")
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] != prefix {
		return "", nil, fmt.Errorf("not a %s key: want %s:KEM:KEY on one line", prefix, prefix)
	}
	if _, ok := kems[parts[1]]; !ok {
		return "", nil, fmt.Errorf("unknown KEM %q", parts[1])
	}
	key, err = base64.RawURLEncoding.Strict().DecodeString(parts[2])
	// The decoder skips CR and LF; re-encoding accepts only the one form.
	if err != nil || base64.RawURLEncoding.EncodeToString(key) != parts[2] {
		return "", nil, errors.New("key is not canonical unpadded base64url")
	}
	return parts[1], key, nil
}

// Seal encrypts plaintext to p, bound to info.
func (p *PublicKey) Seal(info, plaintext []byte) ([]byte, error) {
	enc, s, err := hpke.NewSender(p.pk, kdf(), aead(), info)
	if err != nil {
		return nil, err
	}
	ct, err := s.Seal(nil, plaintext)
	if err != nil {
		return nil, err
	}
	out := binary.BigEndian.AppendUint16(nil, uint16(len(enc)))
	out = append(out, enc...)
	return append(out, ct...), nil
}

// Open decrypts a message from Seal; info must be the one it was sealed with.
func (id *Identity) Open(info, sealed []byte) ([]byte, error) {
	if len(sealed) < 2 {
		return nil, errors.New("sealed message truncated")
	}
	n := int(binary.BigEndian.Uint16(sealed))
	if len(sealed) < 2+n {
		return nil, errors.New("sealed message truncated")
	}
	r, err := hpke.NewRecipient(sealed[2:2+n], id.sk, kdf(), aead(), info)
	if err != nil {
		return nil, fmt.Errorf("sealed message is not for this identity: %w", err)
	}
	pt, err := r.Open(nil, sealed[2+n:])
	if err != nil {
		return nil, errors.New("sealed message does not open with this identity and context")
	}
	return pt, nil
}
