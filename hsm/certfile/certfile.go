// Package certfile reads certificate and CRL files as CA tools write them,
// and prints certificate fingerprints. Every place the project reads a
// certificate from a file (court roots, intermediates, CRLs, judges'
// chains, officers' and TLS CAs and certificates, EK roots) reads it here.
//
// Contract:
//   - A file is DER (one certificate or one CRL) or PEM. PEM may carry
//     explanatory text before, between and after its blocks (RFC 7468
//     section 5.2): openssl ca and openssl x509 -text write it so. The text
//     is skipped; only the blocks count.
//   - A PEM file whose blocks are not all of the expected types is refused,
//     naming the type found: a private key given as a certificate is a
//     mistake to report, not to skip.
//   - Errors name the cause and the next step in words; they carry no
//     decoder text.
//   - Fingerprints are the SHA-256 of the certificate's DER, in the
//     project's form (lower-case hex) and in openssl's
//     (openssl x509 -fingerprint -sha256: upper-case hex, colon-separated).
package certfile

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// ErrNotCertificate is returned for a file that holds no certificate.
var ErrNotCertificate = errors.New("the file holds no certificate: it is neither PEM (-----BEGIN CERTIFICATE-----) nor a DER certificate")

// IsPEM reports whether data holds a PEM block: one at the start, or after
// explanatory text.
func IsPEM(data []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN ")) ||
		bytes.Contains(data, []byte("\n-----BEGIN "))
}

// Blocks returns data's PEM blocks in order, skipping the text around
// them. It refuses data with no block, and a "-----BEGIN" line whose block
// does not decode (a truncated or damaged file), which pem.Decode alone
// would pass over as text.
func Blocks(data []byte) ([]*pem.Block, error) {
	var out []*pem.Block
	rest := data
	for {
		block, next := pem.Decode(rest)
		if block == nil {
			if bytes.Contains(rest, []byte("-----BEGIN ")) {
				return nil, fmt.Errorf("PEM block %d is damaged (a BEGIN line without a matching END line, or bad base64); get the file again from the CA", len(out)+1)
			}
			break
		}
		out = append(out, block)
		rest = next
	}
	if len(out) == 0 {
		return nil, errors.New("the file holds no PEM block")
	}
	return out, nil
}

// Certificates reads one or more certificates: PEM "CERTIFICATE" blocks,
// with any explanatory text, or a single DER certificate.
func Certificates(data []byte) ([]*x509.Certificate, error) {
	if !IsPEM(data) {
		c, err := x509.ParseCertificate(data)
		if err != nil {
			return nil, ErrNotCertificate
		}
		return []*x509.Certificate{c}, nil
	}
	blocks, err := Blocks(data)
	if err != nil {
		return nil, err
	}
	out := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %s, not CERTIFICATE; give certificates only", i+1, blockName(b.Type))
		}
		c, err := ParseDER(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// ParseDER parses one DER certificate, with an error in words.
func ParseDER(der []byte) (*x509.Certificate, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, errors.New("not a valid X.509 certificate (damaged, or another kind of object)")
	}
	return c, nil
}

// Pool reads certificates as [Certificates] does into a pool.
func Pool(data []byte) (*x509.CertPool, error) {
	certs, err := Certificates(data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// PEM encodes certificates as plain PEM, without text.
func PEM(certs ...*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// Fingerprint is the project's form of a certificate's fingerprint: the
// SHA-256 of its DER in lower-case hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// OpenSSLFingerprint is the fingerprint as openssl x509 -fingerprint
// -sha256 prints it: upper-case hex bytes separated by colons.
func OpenSSLFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return colonHex(sum[:])
}

func colonHex(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Fingerprints is both forms for a line a person reads:
// "sha256 <hex> (openssl AB:CD:…)".
func Fingerprints(c *x509.Certificate) string {
	return "sha256 " + Fingerprint(c) + " (openssl " + OpenSSLFingerprint(c) + ")"
}

// FingerprintsOfHex is [Fingerprints] of a fingerprint already in the
// project's form; a string that is not one is returned as it is.
func FingerprintsOfHex(fp string) string {
	sum, err := hex.DecodeString(fp)
	if err != nil || len(sum) != sha256.Size {
		return fp
	}
	return "sha256 " + fp + " (openssl " + colonHex(sum) + ")"
}

// blockName quotes a PEM type for a message, keeping only printable ASCII
// of a bounded length: the type comes from the file.
func blockName(t string) string {
	if len(t) > 40 {
		t = t[:40] + "…"
	}
	return fmt.Sprintf("%q", strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, t))
}
