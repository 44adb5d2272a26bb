// Package bootsig writes and reads boot.sig, the signature the Raspberry
// Pi's EEPROM bootloader checks boot.img against when SIGNED_BOOT=1.
//
// The format is the one raspberrypi/rpi-eeprom's rpi-eeprom-digest writes
// (https://github.com/raspberrypi/rpi-eeprom, tools/rpi-eeprom-digest),
// lines ending in "\n":
//
//	<SHA-256 of boot.img, 64 lowercase hex digits>
//	ts: <decimal Unix time>
//	target-soc: <2711|2712>          (optional)
//	rsa2048: <512 lowercase hex digits>   (optional)
//
// The signature is RSASSA-PKCS1-v1_5 with SHA-256 over the whole of
// boot.img, by a 2048-bit RSA key; the EEPROM holds the public key and the
// OTP the hash of the key that signs the EEPROM itself. Without rsa2048 the
// file only detects corruption and secure boot refuses it. Parse accepts
// exactly this form and nothing more.
package bootsig

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sig is a parsed boot.sig.
type Sig struct {
	Digest    [sha256.Size]byte
	Timestamp int64
	TargetSoC string // "", "2711" (Pi 4) or "2712" (Pi 5)
	Signature []byte // nil, or 256 bytes
}

// maxSize caps what Parse reads; a boot.sig is under 700 bytes.
const maxSize = 1024

// Sign makes the boot.sig of bootImg, signed by key (nil: digest only).
func Sign(bootImg []byte, ts int64, targetSoC string, key crypto.Signer) (*Sig, error) {
	s := &Sig{Digest: sha256.Sum256(bootImg), Timestamp: ts, TargetSoC: targetSoC}
	if err := CheckTargetSoC(targetSoC); err != nil {
		return nil, err
	}
	if key == nil {
		return s, nil
	}
	pub, ok := key.Public().(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 2048 {
		return nil, errors.New("the boot signing key must be RSA-2048: the Pi's bootloader verifies nothing else")
	}
	sig, err := key.Sign(nil, s.Digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing boot.img: %w", err)
	}
	s.Signature = sig
	return s, nil
}

// CheckTargetSoC accepts "" (none), "2711" (Pi 4) and "2712" (Pi 5).
func CheckTargetSoC(soc string) error {
	if soc != "" && soc != "2711" && soc != "2712" {
		return fmt.Errorf("target SoC %q: want 2711 (Pi 4) or 2712 (Pi 5)", soc)
	}
	return nil
}

// Marshal writes s in rpi-eeprom-digest's form.
func (s *Sig) Marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%x\nts: %d\n", s.Digest, s.Timestamp)
	if s.TargetSoC != "" {
		fmt.Fprintf(&b, "target-soc: %s\n", s.TargetSoC)
	}
	if s.Signature != nil {
		fmt.Fprintf(&b, "rsa2048: %x\n", s.Signature)
	}
	return b.Bytes()
}

// Parse reads a boot.sig in exactly the form Marshal writes.
func Parse(data []byte) (*Sig, error) {
	if len(data) > maxSize {
		return nil, errors.New("boot.sig: too large")
	}
	text, ok := strings.CutSuffix(string(data), "\n")
	if !ok {
		return nil, errors.New("boot.sig: must end with a newline")
	}
	lines := strings.Split(text, "\n")
	if len(lines) < 2 {
		return nil, errors.New("boot.sig: want a digest line and a ts line")
	}
	s := &Sig{}
	if err := decodeHex(lines[0], s.Digest[:]); err != nil {
		return nil, fmt.Errorf("boot.sig: digest: %w", err)
	}
	ts, ok := strings.CutPrefix(lines[1], "ts: ")
	n, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || n < 0 || strconv.FormatInt(n, 10) != ts {
		return nil, errors.New("boot.sig: second line must be \"ts: <decimal Unix time>\"")
	}
	s.Timestamp = n
	rest := lines[2:]
	if len(rest) > 0 {
		if soc, ok := strings.CutPrefix(rest[0], "target-soc: "); ok {
			if err := CheckTargetSoC(soc); err != nil || soc == "" {
				return nil, fmt.Errorf("boot.sig: target SoC %q: want 2711 or 2712", soc)
			}
			s.TargetSoC, rest = soc, rest[1:]
		}
	}
	if len(rest) > 0 {
		sig, ok := strings.CutPrefix(rest[0], "rsa2048: ")
		s.Signature = make([]byte, 256)
		if !ok {
			return nil, fmt.Errorf("boot.sig: unexpected line %q", rest[0])
		}
		if err := decodeHex(sig, s.Signature); err != nil {
			return nil, fmt.Errorf("boot.sig: rsa2048: %w", err)
		}
		rest = rest[1:]
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("boot.sig: unexpected line %q", rest[0])
	}
	return s, nil
}

func decodeHex(s string, out []byte) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(out) || hex.EncodeToString(b) != s {
		return fmt.Errorf("want %d lowercase hex digits", 2*len(out))
	}
	copy(out, b)
	return nil
}

// Verify checks s against bootImg and, as the bootloader does, the RSA
// signature against pub. A boot.sig without a signature never verifies.
func (s *Sig) Verify(bootImg []byte, pub *rsa.PublicKey) error {
	d := sha256.Sum256(bootImg)
	if subtle.ConstantTimeCompare(d[:], s.Digest[:]) != 1 {
		return errors.New("boot.sig: digest does not match boot.img")
	}
	if s.Signature == nil {
		return errors.New("boot.sig: unsigned; secure boot refuses it")
	}
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], s.Signature); err != nil {
		return errors.New("boot.sig: the signature does not verify with this public key")
	}
	return nil
}
