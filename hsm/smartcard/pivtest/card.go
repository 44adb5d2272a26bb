// Package pivtest is a judge's PIV card for tests: a small card emulator
// that speaks the NIST SP 800-73-4 commands OpenSC's PIV driver uses, and
// a private pcscd with the vsmartcard virtual reader (vpcd) to insert it
// into, so that signing runs through pcscd, OpenSC's PIV driver and
// opensc-pkcs11.so exactly as with a card in a reader.
//
// The card holds one key, in slot 9c (digital signature), with its
// certificate, a card-holder PIN and its retry counter. It answers:
//
//   - SELECT of the PIV application (its AID or the AID's first 9 bytes);
//   - GET DATA for the discovery object, the CHUID, the 9c certificate and
//     the printed-information object (readable only after VERIFY), with
//     GET RESPONSE for answers longer than the command's Le;
//   - VERIFY of the card-holder PIN: a wrong PIN decrements the retry
//     counter and reports the tries left (63 Cx), none left locks it
//     (69 83); an empty VERIFY reports the state without changing it;
//   - GENERAL AUTHENTICATE with slot 9c, ECDSA P-256 (algorithm 11) or
//     RSA-2048 with PKCS #1 v1.5 padding (algorithm 07), also when the
//     command is chained (CLA 10). As slot 9c's "PIN always" rule asks, a
//     signature is refused (69 82) unless the command right before it was
//     a successful VERIFY.
//
// Everything else is refused with the status a card gives for an unknown
// instruction or object. The emulator signs through Go's crypto packages;
// it never computes a raw RSA operation, so a block that is not PKCS #1
// v1.5 signature padding is refused.
package pivtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Status words the card answers with (ISO 7816-4, SP 800-73-4 part 2).
const (
	swOK                 = 0x9000
	swMoreData           = 0x6100
	swWrongLength        = 0x6700
	swSecurityStatus     = 0x6982
	swPINBlocked         = 0x6983
	swConditions         = 0x6985
	swWrongData          = 0x6A80
	swNotFound           = 0x6A82
	swWrongP1P2          = 0x6A86
	swRefDataNotFound    = 0x6A88
	swInsNotSupported    = 0x6D00
	swClassNotSupported  = 0x6E00
	swTriesLeft          = 0x63C0
	swChainingNotAllowed = 0x6884
)

// Instructions.
const (
	insSelect      = 0xA4
	insGetData     = 0xCB
	insVerify      = 0x20
	insGeneralAuth = 0x87
	insGetResponse = 0xC0
)

// PIV algorithm identifiers (SP 800-78-4, table 6-2) and the slot.
const (
	algRSA2048  = 0x07
	algECCP256  = 0x11
	slotSign    = 0x9C
	pinCardHold = 0x80
)

// MaxTries is the card-holder PIN's retry counter after a successful VERIFY.
const MaxTries = 3

var (
	// pivAID is the PIV application's full AID, version 01 00.
	pivAID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}
	// fascn is a FASC-N with agency code 9999 (a non-federal card), so
	// OpenSC names the token by the CHUID's GUID.
	fascn = []byte{0xD4, 0xE7, 0x39, 0xDA, 0x73, 0x9C, 0xED, 0x39, 0xCE, 0x73, 0x9D, 0x83, 0x68,
		0x58, 0x21, 0x08, 0x42, 0x10, 0x84, 0x21, 0xC8, 0x42, 0x10, 0xC3, 0xEB}
	// Data object tags (SP 800-73-4 part 1, table 3).
	tagDiscovery   = []byte{0x7E}
	tagCHUID       = []byte{0x5F, 0xC1, 0x02}
	tagCertSign    = []byte{0x5F, 0xC1, 0x0A}
	tagPrintedInfo = []byte{0x5F, 0xC1, 0x09}
)

// ATR is the card's answer to reset: T=1, with historical bytes no table
// in OpenSC knows. (An ATR in OpenSC's PIVKey table would make the PIV
// driver turn EC off.)
var ATR = atr([]byte("CUSTJUDG"))

// atr builds 3B 8n 80 01 <historical bytes> TCK: TD1 and TD2 announce T=1,
// and the check byte makes the XOR of T0..TCK zero.
func atr(hist []byte) []byte {
	a := []byte{0x3B, 0x80 | byte(len(hist)), 0x80, 0x01}
	a = append(a, hist...)
	var tck byte
	for _, b := range a[1:] {
		tck ^= b
	}
	return append(a, tck)
}

// Card is an emulated PIV card. Its methods are safe for concurrent use.
type Card struct {
	key  crypto.Signer
	alg  byte
	cert *x509.Certificate
	pin  []byte
	guid [16]byte

	mu           sync.Mutex
	tries        int
	selected     bool
	verified     bool
	lastVerified bool // the previous command was a successful VERIFY
	chain        []byte
	chainHeader  [3]byte // INS P1 P2 of the chain being received
	pending      []byte  // answer bytes left for GET RESPONSE
	signatures   int
}

// New makes a card whose slot 9c holds key (ECDSA P-256 or RSA-2048) and
// cert, protected by pin (6 to 8 digits, as PIV requires).
func New(key crypto.Signer, cert *x509.Certificate, pin string) (*Card, error) {
	c := &Card{key: key, cert: cert, tries: MaxTries}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("pivtest: only P-256 ECDSA keys are emulated")
		}
		c.alg = algECCP256
	case *rsa.PrivateKey:
		if k.N.BitLen() != 2048 {
			return nil, errors.New("pivtest: only RSA-2048 keys are emulated")
		}
		c.alg = algRSA2048
	default:
		return nil, fmt.Errorf("pivtest: key type %T is not emulated", key)
	}
	if len(pin) < 6 || len(pin) > 8 {
		return nil, errors.New("pivtest: a PIV PIN has 6 to 8 characters")
	}
	c.pin = padPIN([]byte(pin))
	if _, err := rand.Read(c.guid[:]); err != nil {
		return nil, err
	}
	c.guid[0] |= 0x10 // never all zero: OpenSC would fall back to the FASC-N
	return c, nil
}

// padPIN pads a PIN to 8 bytes with 0xFF, as VERIFY carries it.
func padPIN(pin []byte) []byte {
	return append(bytes.Clone(pin), bytes.Repeat([]byte{0xFF}, 8-len(pin))...)
}

// Tries returns the PIN tries left.
func (c *Card) Tries() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tries
}

// Signatures returns how many signatures the card made.
func (c *Card) Signatures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signatures
}

// Reset is a power cycle: no application selected, the PIN not verified.
func (c *Card) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.selected, c.verified, c.lastVerified = false, false, false
	c.chain, c.pending = nil, nil
}

// command is a parsed command APDU.
type command struct {
	cla, ins, p1, p2 byte
	data             []byte
	ne               int // bytes the reader accepts in the answer; 0 when none
}

// parseAPDU reads a short or extended command APDU (ISO 7816-4, 5.1).
func parseAPDU(b []byte) (command, bool) {
	if len(b) < 4 {
		return command{}, false
	}
	cmd := command{cla: b[0], ins: b[1], p1: b[2], p2: b[3]}
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
		return cmd, true
	case len(body) == 1: // case 2 short
		cmd.ne = int(body[0])
		if cmd.ne == 0 {
			cmd.ne = 256
		}
		return cmd, true
	case body[0] != 0: // cases 3 and 4 short
		lc := int(body[0])
		switch len(body) {
		case 1 + lc:
		case 2 + lc:
			cmd.ne = int(body[1+lc])
			if cmd.ne == 0 {
				cmd.ne = 256
			}
		default:
			return command{}, false
		}
		cmd.data = body[1 : 1+lc]
		return cmd, true
	}
	// Extended length: 00 then two bytes.
	if len(body) < 3 {
		return command{}, false
	}
	n := int(body[1])<<8 | int(body[2])
	if len(body) == 3 { // case 2 extended
		if cmd.ne = n; n == 0 {
			cmd.ne = 65536
		}
		return cmd, true
	}
	if n == 0 {
		return command{}, false
	}
	switch len(body) {
	case 3 + n:
	case 5 + n:
		if cmd.ne = int(body[3+n])<<8 | int(body[4+n]); cmd.ne == 0 {
			cmd.ne = 65536
		}
	default:
		return command{}, false
	}
	cmd.data = body[3 : 3+n]
	return cmd, true
}

func sw(code int) []byte { return []byte{byte(code >> 8), byte(code)} }

// Transmit runs one command APDU and returns the response APDU.
func (c *Card) Transmit(apdu []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	cmd, ok := parseAPDU(apdu)
	if !ok {
		c.chain, c.pending, c.lastVerified = nil, nil, false
		return sw(swWrongLength)
	}
	if cmd.cla&^0x10 != 0 {
		c.chain, c.pending, c.lastVerified = nil, nil, false
		return sw(swClassNotSupported)
	}
	if cmd.ins == insGetResponse {
		c.lastVerified = false
		return c.getResponse(cmd)
	}
	c.pending = nil
	if cmd.cla&0x10 != 0 {
		return c.chained(cmd)
	}
	if c.chain != nil {
		if c.chainHeader != [3]byte{cmd.ins, cmd.p1, cmd.p2} {
			c.chain, c.lastVerified = nil, false
			return sw(swChainingNotAllowed)
		}
		cmd.data = append(c.chain, cmd.data...)
		c.chain = nil
	}
	// Slot 9c's "PIN always": only the command right after a successful
	// VERIFY may use the key.
	pinJustVerified := c.lastVerified
	c.lastVerified = false
	data, status := c.run(cmd, pinJustVerified)
	return c.answer(data, status, cmd.ne)
}

// chained keeps a command's data until its last part arrives. A chain
// that changes its header midway is refused.
func (c *Card) chained(cmd command) []byte {
	header := [3]byte{cmd.ins, cmd.p1, cmd.p2}
	if c.chain != nil && c.chainHeader != header {
		c.chain, c.lastVerified = nil, false
		return sw(swChainingNotAllowed)
	}
	if cmd.ins != insGeneralAuth {
		c.lastVerified = false
	}
	if len(c.chain)+len(cmd.data) > 4096 {
		c.chain, c.lastVerified = nil, false
		return sw(swWrongLength)
	}
	c.chainHeader = header
	c.chain = append(append([]byte{}, c.chain...), cmd.data...)
	return sw(swOK)
}

// answer sends at most ne bytes now and keeps the rest for GET RESPONSE.
func (c *Card) answer(data []byte, status, ne int) []byte {
	if status != swOK || len(data) == 0 {
		return sw(status)
	}
	if ne == 0 {
		ne = 256
	}
	if len(data) <= ne {
		return append(bytes.Clone(data), sw(swOK)...)
	}
	c.pending = bytes.Clone(data[ne:])
	left := len(c.pending)
	if left > 0xFF {
		left = 0 // 61 00: 256 bytes or more
	}
	return append(bytes.Clone(data[:ne]), sw(swMoreData|left)...)
}

func (c *Card) getResponse(cmd command) []byte {
	if len(c.pending) == 0 {
		return sw(swConditions)
	}
	if cmd.p1 != 0 || cmd.p2 != 0 {
		c.pending = nil
		return sw(swWrongP1P2)
	}
	data := c.pending
	c.pending = nil
	return c.answer(data, swOK, cmd.ne)
}

func (c *Card) run(cmd command, pinJustVerified bool) ([]byte, int) {
	if cmd.ins == insSelect {
		return c.selectApp(cmd)
	}
	if !c.selected {
		return nil, swInsNotSupported
	}
	switch cmd.ins {
	case insGetData:
		return c.getData(cmd)
	case insVerify:
		return c.verify(cmd)
	case insGeneralAuth:
		return c.generalAuthenticate(cmd, pinJustVerified)
	}
	return nil, swInsNotSupported
}

// selectApp selects the PIV application by its AID, or a prefix of at
// least 9 bytes (the PIX without version), and answers with the
// application property template.
func (c *Card) selectApp(cmd command) ([]byte, int) {
	if cmd.p1 != 0x04 || cmd.p2 != 0x00 || len(cmd.data) < 9 || !bytes.HasPrefix(pivAID, cmd.data) {
		return nil, swNotFound
	}
	c.selected = true
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.Tag(0x61), func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0x4F), func(b *cryptobyte.Builder) { b.AddBytes(pivAID[5:]) })
		b.AddASN1(cbasn1.Tag(0x79), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0x4F), func(b *cryptobyte.Builder) { b.AddBytes(pivAID[:5]) })
		})
	})
	return b.BytesOrPanic(), swOK
}

// getData answers GET DATA (P1 P2 = 3F FF, data 5C <tag>).
func (c *Card) getData(cmd command) ([]byte, int) {
	if cmd.p1 != 0x3F || cmd.p2 != 0xFF {
		return nil, swWrongP1P2
	}
	in := cryptobyte.String(cmd.data)
	var tag cryptobyte.String
	if !in.ReadASN1(&tag, cbasn1.Tag(0x5C)) || !in.Empty() {
		return nil, swWrongData
	}
	switch {
	case bytes.Equal(tag, tagDiscovery):
		// 4F: the AID; 5F 2F: PIN usage policy 40 00 (the card-holder PIN).
		return append([]byte{0x7E, 0x12, 0x4F, 0x0B}, append(bytes.Clone(pivAID), 0x5F, 0x2F, 0x02, 0x40, 0x00)...), swOK
	case bytes.Equal(tag, tagCHUID):
		return container(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0x30), func(b *cryptobyte.Builder) { b.AddBytes(fascn) })
			b.AddASN1(cbasn1.Tag(0x34), func(b *cryptobyte.Builder) { b.AddBytes(c.guid[:]) })
			b.AddASN1(cbasn1.Tag(0x35), func(b *cryptobyte.Builder) { b.AddBytes([]byte("20991231")) })
			b.AddASN1(cbasn1.Tag(0x3E), func(*cryptobyte.Builder) {})
		}), swOK
	case bytes.Equal(tag, tagCertSign):
		return container(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0x70), func(b *cryptobyte.Builder) { b.AddBytes(c.cert.Raw) })
			b.AddASN1(cbasn1.Tag(0x71), func(b *cryptobyte.Builder) { b.AddUint8(0) }) // not compressed
		}), swOK
	case bytes.Equal(tag, tagPrintedInfo):
		// Readable only with the PIN verified: OpenSC learns the login
		// state from it, as from a real card.
		if !c.verified {
			return nil, swSecurityStatus
		}
		return container(func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0x01), func(b *cryptobyte.Builder) { b.AddBytes([]byte("Test Judge")) })
		}), swOK
	}
	return nil, swNotFound
}

// container wraps a data object's fields in tag 53 and ends them with the
// error detection code FE 00.
func container(fields func(*cryptobyte.Builder)) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.Tag(0x53), func(b *cryptobyte.Builder) {
		fields(b)
		b.AddASN1(cbasn1.Tag(0xFE), func(*cryptobyte.Builder) {})
	})
	return b.BytesOrPanic()
}

// verify checks the card-holder PIN, reports its state (no data), or
// resets it (P1 = FF).
func (c *Card) verify(cmd command) ([]byte, int) {
	if cmd.p2 != pinCardHold {
		return nil, swRefDataNotFound
	}
	switch {
	case cmd.p1 == 0xFF && len(cmd.data) == 0:
		c.verified = false
		return nil, swOK
	case cmd.p1 != 0x00:
		return nil, swWrongP1P2
	case len(cmd.data) == 0:
		if c.verified {
			return nil, swOK
		}
		if c.tries == 0 {
			return nil, swPINBlocked
		}
		return nil, swTriesLeft | c.tries
	case len(cmd.data) != 8:
		return nil, swWrongData
	case c.tries == 0:
		return nil, swPINBlocked
	}
	if subtle.ConstantTimeCompare(cmd.data, c.pin) != 1 {
		c.verified = false
		c.tries--
		if c.tries == 0 {
			return nil, swPINBlocked
		}
		return nil, swTriesLeft | c.tries
	}
	c.tries = MaxTries
	c.verified, c.lastVerified = true, true
	return nil, swOK
}

// generalAuthenticate signs the challenge (tag 81) of a dynamic
// authentication template 7C { 82 00, 81 <data> } with the 9c key.
func (c *Card) generalAuthenticate(cmd command, pinJustVerified bool) ([]byte, int) {
	if cmd.p2 != slotSign {
		return nil, swRefDataNotFound
	}
	if cmd.p1 != c.alg {
		return nil, swWrongP1P2
	}
	if !c.verified || !pinJustVerified {
		return nil, swSecurityStatus
	}
	in := cryptobyte.String(cmd.data)
	var template, response, challenge cryptobyte.String
	if !in.ReadASN1(&template, cbasn1.Tag(0x7C)) || !in.Empty() ||
		!template.ReadASN1(&response, cbasn1.Tag(0x82)) || !response.Empty() ||
		!template.ReadASN1(&challenge, cbasn1.Tag(0x81)) || !template.Empty() {
		return nil, swWrongData
	}
	sig, err := c.sign(challenge)
	if err != nil {
		return nil, swWrongData
	}
	c.signatures++
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.Tag(0x7C), func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0x82), func(b *cryptobyte.Builder) { b.AddBytes(sig) })
	})
	return b.BytesOrPanic(), swOK
}

// sign makes the signature a PIV card returns: ECDSA as a DER
// SEQUENCE { r, s } over the digest given; RSA over the PKCS #1 v1.5
// block given, which must carry signature padding.
func (c *Card) sign(challenge []byte) ([]byte, error) {
	switch k := c.key.(type) {
	case *ecdsa.PrivateKey:
		if len(challenge) != 32 {
			return nil, errors.New("digest length")
		}
		return ecdsa.SignASN1(rand.Reader, k, challenge)
	case *rsa.PrivateKey:
		payload, ok := unpadPKCS1(challenge, k.Size())
		if !ok {
			return nil, errors.New("not PKCS #1 v1.5 signature padding")
		}
		// Hash 0 signs the given DigestInfo as it is.
		return rsa.SignPKCS1v15(nil, k, crypto.Hash(0), payload)
	}
	return nil, errors.New("key type")
}

// unpadPKCS1 returns T from EM = 00 01 FF..FF 00 T (RFC 8017, 9.2).
func unpadPKCS1(em []byte, size int) ([]byte, bool) {
	if len(em) != size || len(em) < 11 || em[0] != 0x00 || em[1] != 0x01 {
		return nil, false
	}
	i := 2
	for i < len(em) && em[i] == 0xFF {
		i++
	}
	if i < 10 || i == len(em) || em[i] != 0x00 {
		return nil, false
	}
	return em[i+1:], true
}

// Certificate returns the certificate in slot 9c.
func (c *Card) Certificate() *x509.Certificate { return c.cert }

// Serial is the token serial number OpenSC reports for card: the last 16
// hex digits of the CHUID's GUID (CK_TOKEN_INFO has room for 16).
func Serial(card *Card) string { return hex.EncodeToString(card.guid[8:]) }
