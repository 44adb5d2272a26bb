package pivtest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

const testPIN = "123456"

func newCard(t testing.TB, key crypto.Signer) *Card {
	t.Helper()
	c, err := New(key, trusttest.SelfSigned(t, "Judge Test", key, time.Now()), testPIN)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

var (
	selectPIV = mustHex("00A4040009A00000030800001000" + "00")
	verifyPIN = append(mustHex("0020008008"), padPIN([]byte(testPIN))...)
	verifyBad = append(mustHex("0020008008"), padPIN([]byte("654321"))...)
	pinStatus = mustHex("00200080")
	getCert   = mustHex("00CB3FFF055C035FC10A00")
)

// status returns a response's status word.
func status(resp []byte) int { return int(resp[len(resp)-2])<<8 | int(resp[len(resp)-1]) }

func expect(t *testing.T, c *Card, apdu []byte, want int) []byte {
	t.Helper()
	resp := c.Transmit(apdu)
	if got := status(resp); got != want {
		t.Fatalf("APDU %X: status %04X, want %04X", apdu, got, want)
	}
	return resp[:len(resp)-2]
}

// signP256 is GENERAL AUTHENTICATE with slot 9c and a P-256 digest.
func signP256(digest []byte) []byte { return generalAuth(algECCP256, slotSign, digest) }

func generalAuth(alg, slot byte, challenge []byte) []byte {
	body := append([]byte{0x7C, byte(4 + len(challenge)), 0x82, 0x00, 0x81, byte(len(challenge))}, challenge...)
	return append(append([]byte{0x00, insGeneralAuth, alg, slot, byte(len(body))}, body...), 0x00)
}

// parseSignature takes the signature out of 7C { 82 <sig> }.
func parseSignature(t *testing.T, resp []byte) []byte {
	t.Helper()
	if len(resp) < 4 || resp[0] != 0x7C || resp[2] != 0x82 {
		// Long forms are not expected for P-256.
		t.Fatalf("answer %X is not 7C { 82 … }", resp)
	}
	return resp[4:]
}

// TestInvariantPIVSignatureNeedsVERIFYRightBefore: slot 9c is "PIN
// always": the card signs only as the command right after a successful
// VERIFY, once per VERIFY.
func TestInvariantPIVSignatureNeedsVERIFYRightBefore(t *testing.T) {
	key := trusttest.ECKey(t, elliptic.P256())
	c := newCard(t, key)
	digest := sha256.Sum256([]byte("warrant"))
	expect(t, c, signP256(digest[:]), swInsNotSupported) // no application selected
	expect(t, c, selectPIV, swOK)
	expect(t, c, signP256(digest[:]), swSecurityStatus)
	expect(t, c, verifyPIN, swOK)
	sig := parseSignature(t, expect(t, c, signP256(digest[:]), swOK))
	if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
		t.Fatal("the card's signature does not verify")
	}
	expect(t, c, signP256(digest[:]), swSecurityStatus) // a second signature needs a second VERIFY
	expect(t, c, verifyPIN, swOK)
	if sw := status(c.Transmit(getCert)); sw&0xFF00 != swMoreData {
		t.Fatalf("certificate: status %04X", sw)
	}
	expect(t, c, signP256(digest[:]), swSecurityStatus) // another command came between
	expect(t, c, verifyPIN, swOK)
	expect(t, c, pinStatus, swOK)
	expect(t, c, signP256(digest[:]), swSecurityStatus) // a status query is no VERIFY of the PIN
	expect(t, c, verifyPIN, swOK)
	c.Reset()
	expect(t, c, selectPIV, swOK)
	expect(t, c, signP256(digest[:]), swSecurityStatus) // a reset forgets the PIN
	if n := c.Signatures(); n != 1 {
		t.Fatalf("%d signatures, want 1", n)
	}
}

// TestInvariantPIVWrongPINCountsDown: each wrong PIN costs a try and
// says how many are left; a right PIN restores them; none left locks the
// PIN, and then not even the right one opens the card.
func TestInvariantPIVWrongPINCountsDown(t *testing.T) {
	c := newCard(t, trusttest.ECKey(t, elliptic.P256()))
	expect(t, c, selectPIV, swOK)
	expect(t, c, pinStatus, swTriesLeft|3)
	expect(t, c, verifyBad, swTriesLeft|2)
	expect(t, c, verifyBad, swTriesLeft|1)
	expect(t, c, pinStatus, swTriesLeft|1)
	expect(t, c, verifyPIN, swOK)
	if c.Tries() != MaxTries {
		t.Fatalf("%d tries after the right PIN", c.Tries())
	}
	expect(t, c, pinStatus, swOK)
	expect(t, c, mustHex("002000800A"+"3132333435363738393A"), swWrongData) // PIN longer than 8 bytes
	expect(t, c, verifyBad, swTriesLeft|2)
	expect(t, c, pinStatus, swTriesLeft|2) // a wrong PIN also ends the verified state
	expect(t, c, verifyBad, swTriesLeft|1)
	expect(t, c, verifyBad, swPINBlocked)
	expect(t, c, verifyPIN, swPINBlocked)
	expect(t, c, pinStatus, swPINBlocked)
	digest := sha256.Sum256([]byte("warrant"))
	expect(t, c, signP256(digest[:]), swSecurityStatus)
	if c.Tries() != 0 {
		t.Fatalf("%d tries left, want 0", c.Tries())
	}
}

// TestPIVLongAnswersAndChaining: the certificate comes in parts through
// GET RESPONSE; an RSA-2048 block arrives in a command chain.
func TestPIVLongAnswersAndChaining(t *testing.T) {
	key := trusttest.RSAKey(t, 2048)
	c := newCard(t, key)
	expect(t, c, selectPIV, swOK)

	var object []byte
	resp := c.Transmit(getCert)
	for status(resp)&0xFF00 == swMoreData {
		object = append(object, resp[:len(resp)-2]...)
		resp = c.Transmit([]byte{0x00, 0xC0, 0x00, 0x00, byte(status(resp))})
	}
	object = append(object, resp[:len(resp)-2]...)
	if status(resp) != swOK || !bytes.Contains(object, c.cert.Raw) || object[0] != 0x53 {
		t.Fatalf("status %04X; certificate object of %d bytes does not hold the certificate", status(resp), len(object))
	}
	expect(t, c, []byte{0x00, 0xC0, 0x00, 0x00, 0x00}, swConditions) // nothing left

	digest := sha256.Sum256([]byte("warrant"))
	prefix := []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}
	t1 := append(prefix, digest[:]...)
	block := append(append([]byte{0x00, 0x01}, bytes.Repeat([]byte{0xFF}, 256-3-len(t1))...), 0x00)
	block = append(block, t1...)
	body := append(mustHex("7C82010682008182010"+"0"), block...)
	chain := func(body []byte) [][]byte {
		first := append([]byte{0x10, 0x87, 0x07, 0x9C, 0xFF}, body[:255]...)
		last := append(append([]byte{0x00, 0x87, 0x07, 0x9C, byte(len(body) - 255)}, body[255:]...), 0x00)
		return [][]byte{first, last}
	}
	parts := chain(body)
	expect(t, c, verifyPIN, swOK)
	expect(t, c, parts[0], swOK)
	resp = c.Transmit(parts[1])
	var answer []byte
	for status(resp)&0xFF00 == swMoreData {
		answer = append(answer, resp[:len(resp)-2]...)
		resp = c.Transmit([]byte{0x00, 0xC0, 0x00, 0x00, byte(status(resp))})
	}
	answer = append(answer, resp[:len(resp)-2]...)
	if status(resp) != swOK || len(answer) != 4+4+256 {
		t.Fatalf("status %04X, answer of %d bytes", status(resp), len(answer))
	}
	if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], answer[8:]); err != nil {
		t.Fatalf("the card's RSA signature does not verify: %v", err)
	}

	// A chain interrupted by another command is dropped, and the PIN
	// must be verified again.
	expect(t, c, verifyPIN, swOK)
	expect(t, c, parts[0], swOK)
	expect(t, c, getCert, swChainingNotAllowed)
	expect(t, c, parts[1], swSecurityStatus)

	// Not signature padding: the card does no raw RSA.
	raw := bytes.Clone(body)
	raw[9] = 0x02
	expect(t, c, verifyPIN, swOK)
	parts = chain(raw)
	expect(t, c, parts[0], swOK)
	expect(t, c, parts[1], swWrongData)
}

// TestPIVRefusals: what the card does not have or understand gets the
// status a card gives, never data.
func TestPIVRefusals(t *testing.T) {
	c := newCard(t, trusttest.ECKey(t, elliptic.P256()))
	digest := sha256.Sum256([]byte("warrant"))
	for _, tc := range []struct {
		name string
		apdu []byte
		want int
	}{
		{"get data before select", getCert, swInsNotSupported},
		{"other application", mustHex("00A4040007A000000527210100"), swNotFound},
		{"select", selectPIV, swOK},
		{"short", mustHex("00CB3F"), swWrongLength},
		{"Lc beyond the data", mustHex("00CB3FFF095C035FC10A"), swWrongLength},
		{"proprietary class", mustHex("80CB3FFF055C035FC10A00"), swClassNotSupported},
		{"unknown instruction", mustHex("0084000008"), swInsNotSupported},
		{"unknown object", mustHex("00CB3FFF055C035FC10500"), swNotFound},
		{"printed info without PIN", mustHex("00CB3FFF055C035FC10900"), swSecurityStatus},
		{"get data bad P1P2", mustHex("00CB0000055C035FC10A00"), swWrongP1P2},
		{"get data no 5C", mustHex("00CB3FFF055D035FC10A00"), swWrongData},
		{"PUK", mustHex("00200081"), swRefDataNotFound},
		{"verify bad P1", mustHex("00200180"), swWrongP1P2},
		{"verify", verifyPIN, swOK},
		{"key management slot", generalAuth(algECCP256, 0x9D, digest[:]), swRefDataNotFound},
		{"verify", verifyPIN, swOK},
		{"RSA algorithm for an EC key", generalAuth(algRSA2048, slotSign, digest[:]), swWrongP1P2},
		{"verify", verifyPIN, swOK},
		{"short digest", signP256(digest[:20]), swWrongData},
		{"verify", verifyPIN, swOK},
		{"trailing bytes in template", mustHex("0087119C0A" + "7C0882008102AAAA9900" + "00"), swWrongData},
	} {
		if got := status(c.Transmit(tc.apdu)); got != tc.want {
			t.Errorf("%s (%X): status %04X, want %04X", tc.name, tc.apdu, got, tc.want)
		}
	}
	if c.Signatures() != 0 {
		t.Fatal("signed a refused command")
	}
	for _, bad := range []crypto.Signer{trusttest.ECKey(t, elliptic.P384()), trusttest.RSAKey(t, 1024)} {
		if _, err := New(bad, c.cert, testPIN); err == nil {
			t.Errorf("made a card with a %T key", bad)
		}
	}
	if _, err := New(trusttest.ECKey(t, elliptic.P256()), c.cert, "12345"); err == nil {
		t.Error("made a card with a 5-digit PIN")
	}
}

// FuzzPIVCard sends sequences of APDUs: the card never panics, never
// signs unless the command before was a successful VERIFY (parts of the
// same chained GENERAL AUTHENTICATE aside), and its retry counter only
// falls, or returns to full on the right PIN.
func FuzzPIVCard(f *testing.F) {
	seq := func(apdus ...[]byte) []byte {
		var out []byte
		for _, a := range apdus {
			out = append(append(out, byte(len(a))), a...)
		}
		return out
	}
	digest := sha256.Sum256([]byte("warrant"))
	f.Add(seq(selectPIV, verifyPIN, signP256(digest[:])))
	f.Add(seq(selectPIV, verifyBad, verifyPIN, getCert, []byte{0, 0xC0, 0, 0, 0}, signP256(digest[:])))
	f.Add(seq(selectPIV, verifyPIN, append([]byte{0x10}, signP256(digest[:])[1:20]...), signP256(digest[:])))
	key := trusttest.ECKey(f, elliptic.P256())
	cert := trusttest.SelfSigned(f, "Judge Test", key, time.Now())
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := New(key, cert, testPIN)
		if err != nil {
			t.Fatal(err)
		}
		lastVerified := false
		tries := c.Tries()
		for len(in) > 0 {
			n := min(int(in[0]), len(in)-1)
			apdu := in[1 : 1+n]
			in = in[1+n:]
			resp := c.Transmit(apdu)
			if len(resp) < 2 {
				t.Fatalf("answer %X has no status", resp)
			}
			sw := status(resp)
			ok := sw == swOK || sw&0xFF00 == swMoreData
			chainedGA := len(apdu) >= 4 && apdu[0] == 0x10 && apdu[1] == insGeneralAuth
			if len(apdu) >= 4 && apdu[0] == 0x00 && apdu[1] == insGeneralAuth && ok && !lastVerified {
				t.Fatalf("signed without a VERIFY right before: %X", apdu)
			}
			switch {
			case len(apdu) > 5 && apdu[0] == 0x00 && apdu[1] == insVerify && apdu[2] == 0 && sw == swOK:
				lastVerified = true
			case chainedGA && sw == swOK:
			default:
				lastVerified = false
			}
			now := c.Tries()
			if now < 0 || (now > tries && now != MaxTries) || (now > tries && sw != swOK) {
				t.Fatalf("tries went from %d to %d (status %04X)", tries, now, sw)
			}
			tries = now
		}
	})
}

func ExampleATR() {
	fmt.Printf("% X\n", ATR)
	// Output: 3B 88 80 01 43 55 53 54 4A 55 44 47 04
}

// encodeAPDU writes cmd back in the short or extended form.
func encodeAPDU(cmd command, extended bool) []byte {
	out := []byte{cmd.cla, cmd.ins, cmd.p1, cmd.p2}
	if extended {
		if len(cmd.data) > 0 {
			out = append(append(out, 0, byte(len(cmd.data)>>8), byte(len(cmd.data))), cmd.data...)
		}
		if cmd.ne > 0 {
			if len(cmd.data) == 0 {
				out = append(out, 0)
			}
			out = append(out, byte(cmd.ne>>8), byte(cmd.ne)) // 65536 wraps to 00 00
		}
		return out
	}
	if len(cmd.data) > 0 {
		out = append(append(out, byte(len(cmd.data))), cmd.data...)
	}
	if cmd.ne > 0 {
		out = append(out, byte(cmd.ne)) // 256 wraps to 00
	}
	return out
}

// FuzzParseAPDU: an APDU the card accepts is exactly one command: it
// encodes back to the same bytes, in the same form.
func FuzzParseAPDU(f *testing.F) {
	for _, seed := range [][]byte{selectPIV, verifyPIN, pinStatus, getCert, mustHex("00CB3FFF0000055C035FC10A0000")} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, ok := parseAPDU(b)
		if !ok {
			return
		}
		extended := len(b) > 5 && b[4] == 0
		if got := encodeAPDU(cmd, extended); !bytes.Equal(got, b) {
			t.Fatalf("%X parsed as %+v, which encodes as %X", b, cmd, got)
		}
	})
}
