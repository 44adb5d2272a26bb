package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"

	circlhpke "github.com/cloudflare/circl/hpke"
	"golang.org/x/crypto/cryptobyte"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/warrant"
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

// Envelope encoding, version 3: magic "CUSTENV3", then uint16-prefixed key
// ID, target, HPKE encapsulated key (65 bytes) and seal proof (65 bytes,
// A ‖ z, sealproof3.go), then the AEAD ciphertext to the end. Version 2
// ("CUSTENV2") is the same with a 64-byte proof c ‖ z (sealproof.go), and
// still opens; version 1 ("CUSTENV1") had no seal proof.
const (
	envelopeMagic   = "CUSTENV3"
	envelopeMagicV2 = "CUSTENV2"
	envelopeMagicV1 = "CUSTENV1"
)

// proofLen is the seal proof's length in an envelope of the version magic
// names (0 for version 1, which has none).
func proofLen(magic string) int {
	switch magic {
	case envelopeMagic:
		return sealProofV3Len
	case envelopeMagicV2:
		return sealProofLen
	}
	return 0
}

// ErrEnvelope wraps every reason an envelope does not open.
var ErrEnvelope = errors.New("the envelope does not open")

// ErrNotEscrowEnvelope means the bytes are no escrow envelope at all: the
// wrong file, rather than an envelope that does not open.
var ErrNotEscrowEnvelope = errors.New("not an escrow envelope")

func envelopeInfo(keyID, target string) []byte {
	return []byte("custodian envelope v1\x00" + keyID + "\x00" + target)
}

// The envelope suite as circl names it, for sealing: the sealer must know
// the ephemeral scalar r to prove it, and crypto/hpke draws it out of
// reach. circl derives the ephemeral key from a seed it is given (RFC 9180
// DeriveKeyPair), so the seal keeps the seed, derives r the same way and
// checks that the encapsulation is r·G. Opening stays with crypto/hpke.
var sealSuite = circlhpke.NewSuite(circlhpke.KEM_P256_HKDF_SHA256, circlhpke.KDF_HKDF_SHA256, circlhpke.AEAD_ChaCha20Poly1305)

// Seal encrypts plaintext to the escrow public key of pub, for target,
// and proves the encapsulation was drawn by the sealer (sealproof.go).
func Seal(pub *Public, target string, plaintext []byte) ([]byte, error) {
	return seal(pub, target, plaintext, proveSealV3)
}

// seal is Seal with the seal proof prove makes.
func seal(pub *Public, target string, plaintext []byte, prove func(*sealStatement, []byte) ([]byte, error)) ([]byte, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	if len(plaintext) > MaxEnvelopePlaintext {
		return nil, fmt.Errorf("%d bytes; an envelope holds at most %d", len(plaintext), MaxEnvelopePlaintext)
	}
	scheme := circlhpke.KEM_P256_HKDF_SHA256.Scheme()
	pk, err := scheme.UnmarshalBinaryPublicKey(pub.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("escrow public key: %v", err)
	}
	seed := make([]byte, scheme.EncapsulationSeedSize())
	defer clear(seed)
	if _, err := rand.Read(seed); err != nil {
		return nil, err
	}
	ephPub, ephPriv := scheme.DeriveKeyPair(seed)
	r, err := ephPriv.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(r)
	want, err := ephPub.MarshalBinary()
	if err != nil {
		return nil, err
	}
	sender, err := sealSuite.NewSender(pk, envelopeInfo(pub.KeyID, target))
	if err != nil {
		return nil, err
	}
	enc, sealer, err := sender.Setup(bytes.NewReader(seed))
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(enc, want) {
		// The proof would be about another point than the one sent.
		return nil, errors.New("escrow: the HPKE encapsulation is not the key derived from its seed")
	}
	ct, err := sealer.Seal(plaintext, nil)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(ct)
	proof, err := prove(&sealStatement{keyID: pub.KeyID, target: target, digest: digest[:], enc: enc}, r)
	if err != nil {
		return nil, err
	}
	return (&Envelope{KeyID: pub.KeyID, Target: target, Enc: enc, Proof: proof, ciphertext: ct}).encode()
}

// Envelope is a parsed envelope. ParseEnvelope returns only envelopes whose
// seal proof verified; Open also returns version 1 envelopes (no Proof).
type Envelope struct {
	KeyID, Target string
	Enc           []byte // the HPKE encapsulated key: a P-256 point R
	Proof         []byte // the seal proof: A ‖ z (version 3) or c ‖ z (version 2)
	ciphertext    []byte
	// proven: its seal proof verified (ParseEnvelope, or with others in
	// OpenBatch).
	proven bool
}

func (e *Envelope) encode() ([]byte, error) {
	magic := envelopeMagic
	if len(e.Proof) == sealProofLen {
		magic = envelopeMagicV2
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte(magic))
	for _, f := range [][]byte{[]byte(e.KeyID), []byte(e.Target), e.Enc, e.Proof} {
		b.AddUint16LengthPrefixed(func(c *cryptobyte.Builder) { c.AddBytes(f) })
	}
	b.AddBytes(e.ciphertext)
	return b.Bytes()
}

// CiphertextSHA256 is the digest of the envelope's ciphertext, which its
// seal proof binds.
func (e *Envelope) CiphertextSHA256() []byte {
	d := sha256.Sum256(e.ciphertext)
	return d[:]
}

// Ref names the envelope in a warrant: everything the appliance needs to
// check its seal proof.
func (e *Envelope) Ref() warrant.EnvelopeRef {
	return warrant.EnvelopeRef{KeyID: e.KeyID, Target: e.Target, Enc: bytes.Clone(e.Enc),
		CiphertextSHA256: e.CiphertextSHA256(), Proof: bytes.Clone(e.Proof)}
}

// ParseEnvelope decodes an envelope of version 2 or 3 and checks its seal
// proof. A version 1 envelope, which has none, is refused (ErrUnproven):
// scoped mode cannot tell it from one a requester made out of another
// envelope's key.
func ParseEnvelope(data []byte) (*Envelope, error) {
	env, err := DecodeEnvelope(data)
	if err != nil {
		return nil, err
	}
	if err := CheckSealProof(env.KeyID, env.Target, env.Enc, env.CiphertextSHA256(), env.Proof); err != nil {
		return nil, err
	}
	env.proven = true
	return env, nil
}

// DecodeEnvelope decodes an envelope of version 2 or 3 WITHOUT checking
// its seal proof, for a reader that checks many at once
// ([CheckSealProofs] on their [Envelope.Ref]s) before trusting any. A
// version 1 envelope is refused, as ParseEnvelope refuses it.
func DecodeEnvelope(data []byte) (*Envelope, error) {
	if bytes.HasPrefix(data, []byte(envelopeMagicV1)) {
		return nil, &unprovenError{detail: "it is a version 1 envelope, sealed without a proof of its sealing"}
	}
	magic := envelopeMagic
	if bytes.HasPrefix(data, []byte(envelopeMagicV2)) {
		magic = envelopeMagicV2
	}
	return decodeEnvelope(data, magic)
}

// decodeEnvelope decodes the fields of an envelope of the version magic
// names; version 1 has no proof.
func decodeEnvelope(data []byte, magic string) (*Envelope, error) {
	s := cryptobyte.String(data)
	var m []byte
	var keyID, target, enc, proof cryptobyte.String
	ok := s.ReadBytes(&m, len(magic)) && string(m) == magic &&
		s.ReadUint16LengthPrefixed(&keyID) && s.ReadUint16LengthPrefixed(&target) &&
		s.ReadUint16LengthPrefixed(&enc) && len(enc) == pointLen
	if n := proofLen(magic); n > 0 {
		ok = ok && s.ReadUint16LengthPrefixed(&proof) && len(proof) == n
	}
	if !ok || len(s) < 16 {
		return nil, fmt.Errorf("%w: %w", ErrEnvelope, ErrNotEscrowEnvelope)
	}
	if err := ids.CheckKeyID(string(keyID)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	if err := checkTarget(string(target)); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	return &Envelope{KeyID: string(keyID), Target: string(target), Enc: bytes.Clone(enc), Proof: bytes.Clone(proof), ciphertext: s}, nil
}

// Open decrypts an envelope with a recovered key (share mode). The key
// must be for the envelope's key ID; the target is bound by the HPKE info,
// so an envelope whose header was edited does not open. A version 2 or 3
// envelope's seal proof must verify; a version 1 envelope, which has no
// proof, opens too: the proof keeps custodians from computing on keys the
// requester did not draw, and a recovered key needs no custodian.
func Open(k *Key, data []byte) (*Envelope, []byte, error) { return k.Open(data) }

// Open is [Open] with k.
func (k *Key) Open(data []byte) (*Envelope, []byte, error) {
	var env *Envelope
	var err error
	if bytes.HasPrefix(data, []byte(envelopeMagicV1)) {
		env, err = decodeEnvelope(data, envelopeMagicV1)
		if err == nil {
			env.proven = true // nothing to prove: see above
		}
	} else {
		env, err = ParseEnvelope(data)
	}
	if err != nil {
		return nil, nil, err
	}
	return k.OpenProven(env)
}

// OpenProven opens an envelope whose seal proof was checked.
func (k *Key) OpenProven(env *Envelope) (*Envelope, []byte, error) {
	if !env.proven {
		return nil, nil, &unprovenError{detail: "its seal proof was not checked"}
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
