// Package certfile reads certificate and CRL files as CA tools write them,
// and prints certificate fingerprints. Every place the project reads a
// certificate from a file (court roots, intermediates, CRLs, judges'
// chains, officers' and TLS CAs and certificates, EK roots) reads it here.
//
// Contract:
//   - A file is DER (one certificate or one CRL) or PEM, tried in that
//     order: a DER certificate may hold PEM text in a name, and is still
//     the DER certificate it is. PEM may carry
//     explanatory text before, between and after its blocks (RFC 7468
//     section 5.2): openssl ca and openssl x509 -text write it so. The text
//     is skipped; only the blocks count.
//   - A PEM file with a damaged block (bad base64, a missing or mismatched
//     END line) is refused, naming the block, even when good blocks follow
//     it: pem.Decode alone passes over it as text.
//   - A PEM file whose blocks are not all of the expected types is refused,
//     naming the type found: a private key given as a certificate is a
//     mistake to report, not to skip.
//   - Errors name the cause and the next step in words; they carry no
//     decoder text.
//   - Fingerprints are the SHA-256 of the certificate's DER as read, in the
//     project's form (lower-case hex) and in openssl's
//     (openssl x509 -fingerprint -sha256: upper-case hex, colon-separated).
//     openssl re-encodes the signature algorithm before hashing; where
//     that would change the bytes, the openssl form is not claimed.
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

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// ErrNotCertificate is returned for a file that holds no certificate.
var ErrNotCertificate = errors.New("the file holds no certificate: it is neither PEM (-----BEGIN CERTIFICATE-----) nor a DER certificate")

// IsPEM reports whether data holds a PEM block: one at the start, or after
// explanatory text. DER is tried first by every reader (a DER certificate
// may hold such text in a name).
func IsPEM(data []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN ")) ||
		bytes.Contains(data, []byte("\n-----BEGIN "))
}

// MaybeDER reports whether data starts as DER's outer SEQUENCE does.
func MaybeDER(data []byte) bool { return len(data) > 0 && data[0] == 0x30 }

// Blocks returns data's PEM blocks in order, skipping the text around
// them. It refuses data with no block, and data with any "-----BEGIN"
// line whose block does not decode (a truncated or damaged file), naming
// that block: pem.Decode passes over a damaged block as text when a good
// one follows.
func Blocks(data []byte) ([]*pem.Block, error) {
	starts := beginLines(data)
	if len(starts) == 0 {
		return nil, errors.New("the file holds no PEM block")
	}
	out := make([]*pem.Block, 0, len(starts))
	for i, at := range starts {
		end := len(data)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		// The block must decode from its own BEGIN line without reaching
		// into the next block's.
		block, rest := pem.Decode(data[at:end])
		if block == nil || len(data[at:end])-len(rest) <= 0 {
			return nil, fmt.Errorf("PEM block %d is damaged (its BEGIN line names %s; bad base64, a missing or mismatched END line, or a cut-off file); get the file again from its source", i+1, BlockName(beginType(data[at:])))
		}
		out = append(out, block)
	}
	return out, nil
}

// beginLines is the offset of every line starting "-----BEGIN ", where
// pem.Decode looks for blocks.
func beginLines(data []byte) []int {
	var out []int
	marker := []byte("-----BEGIN ")
	for at := 0; at < len(data); {
		if bytes.HasPrefix(data[at:], marker) {
			out = append(out, at)
		}
		nl := bytes.IndexByte(data[at:], '\n')
		if nl < 0 {
			break
		}
		at += nl + 1
	}
	return out
}

// beginType is the type a BEGIN line names, for a message.
func beginType(line []byte) string {
	line = bytes.TrimPrefix(line, []byte("-----BEGIN "))
	if end := bytes.Index(line, []byte("-----")); end >= 0 {
		return string(line[:end])
	}
	return "no type"
}

// Certificates reads one or more certificates: a single DER certificate,
// or PEM "CERTIFICATE" blocks with any explanatory text.
func Certificates(data []byte) ([]*x509.Certificate, error) {
	if MaybeDER(data) {
		if c, err := x509.ParseCertificate(data); err == nil {
			return []*x509.Certificate{c}, nil
		}
	}
	if !IsPEM(data) {
		return nil, ErrNotCertificate
	}
	blocks, err := Blocks(data)
	if err != nil {
		return nil, err
	}
	out := make([]*x509.Certificate, 0, len(blocks))
	for i, b := range blocks {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %s, not CERTIFICATE; give certificates only%s", i+1, BlockName(b.Type), otherKindHint(b.Type))
		}
		c, err := ParseDER(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// otherKindHint says where a block of another kind goes, for the kinds
// people mix up with certificates.
func otherKindHint(t string) string {
	if t == "X509 CRL" {
		return " (a CRL goes to custodian trust set-crl)"
	}
	return ""
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
// -sha256 prints it: upper-case hex bytes separated by colons. It is ""
// for a certificate openssl would hash other bytes of (opensslHashesRaw).
func OpenSSLFingerprint(c *x509.Certificate) string {
	if !opensslHashesRaw(c.Raw) {
		return ""
	}
	sum := sha256.Sum256(c.Raw)
	return colonHex(sum[:])
}

// opensslHashesRaw reports whether openssl's fingerprint of der is the
// SHA-256 of der itself. openssl hashes the cached bytes of the
// to-be-signed part but re-encodes the outer signature algorithm, so its
// parameters must be what DER encodes one way: absent, NULL, or a
// SEQUENCE (RSA-PSS). Go accepts others (a constructed OCTET STRING, for
// one), which openssl would re-encode.
func opensslHashesRaw(der []byte) bool {
	in := cryptobyte.String(der)
	var cert, tbs, alg, oid cryptobyte.String
	if !in.ReadASN1(&cert, asn1.SEQUENCE) || !cert.ReadASN1(&tbs, asn1.SEQUENCE) ||
		!cert.ReadASN1(&alg, asn1.SEQUENCE) || !alg.ReadASN1(&oid, asn1.OBJECT_IDENTIFIER) {
		return false
	}
	if alg.Empty() {
		return true
	}
	var params cryptobyte.String
	var tag asn1.Tag
	if !alg.ReadAnyASN1(&params, &tag) || !alg.Empty() {
		return false
	}
	return (tag == asn1.NULL && params.Empty()) || tag == asn1.SEQUENCE
}

func colonHex(sum []byte) string {
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// Fingerprints is both forms for a line a person reads:
// "sha256 <hex> (openssl AB:CD:…)", or, for a certificate openssl would
// hash other bytes of, the SHA-256 of its DER as read with that said.
func Fingerprints(c *x509.Certificate) string {
	return FingerprintLine(Fingerprint(c), OpenSSLFingerprint(c))
}

// FingerprintLine is [Fingerprints] of fingerprints already computed (a
// stored listing): fp in the project's form, openssl in openssl's or "".
func FingerprintLine(fp, openssl string) string {
	if openssl == "" {
		return "sha256 " + fp + " (of the certificate's bytes as read; not strict DER, so openssl prints another fingerprint: ask the CA to reissue it)"
	}
	return "sha256 " + fp + " (openssl " + openssl + ")"
}

// BlockName quotes a PEM type for a message, keeping only printable ASCII
// of a bounded length: the type comes from the file.
func BlockName(t string) string {
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
