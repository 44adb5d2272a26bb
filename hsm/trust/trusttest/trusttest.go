// Package trusttest makes court PKIs for tests: root and intermediate CAs,
// judge certificates and CRLs, all generated with crypto/x509 so the tests
// need no fixtures that could expire.
package trusttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// CA is a certificate authority with its key in memory.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// nextSerial returns a random positive 63-bit serial number.
func nextSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

// ECKey makes an ECDSA key on curve.
func ECKey(tb testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// RSAKey makes an RSA key of the given size.
func RSAKey(tb testing.TB, bits int) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// NewRoot makes a self-signed root CA valid from now-1y to now+10y.
func NewRoot(tb testing.TB, name string, now time.Time) *CA {
	tb.Helper()
	key := ECKey(tb, elliptic.P256())
	tmpl := caTemplate(name, now)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return &CA{Cert: parse(tb, der), Key: key}
}

func caTemplate(name string, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Test Courts"}},
		NotBefore:             now.Add(-365 * 24 * time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

// Intermediate makes a CA certificate issued by ca.
func (ca *CA) Intermediate(tb testing.TB, name string, now time.Time) *CA {
	tb.Helper()
	key := ECKey(tb, elliptic.P256())
	der, err := x509.CreateCertificate(rand.Reader, caTemplate(name, now), ca.Cert, key.Public(), ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return &CA{Cert: parse(tb, der), Key: key}
}

// Judge issues a signing certificate for pub, valid from now-30d to
// now+1y with digitalSignature usage; edit may change the template.
func (ca *CA) Judge(tb testing.TB, name string, pub crypto.PublicKey, now time.Time, edit ...func(*x509.Certificate)) *x509.Certificate {
	tb.Helper()
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	ski := sha256.Sum256(spki) // RFC 7093, method 1
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Test Courts"}},
		SubjectKeyId: ski[:20],
		NotBefore:    now.Add(-30 * 24 * time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	for _, e := range edit {
		e(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return parse(tb, der)
}

// CRL issues a CRL valid from thisUpdate to nextUpdate listing revoked.
func (ca *CA) CRL(tb testing.TB, thisUpdate, nextUpdate time.Time, revoked ...*x509.Certificate) []byte {
	tb.Helper()
	return ca.CRLWith(tb, thisUpdate, nextUpdate, nil, revoked...)
}

// CRLWith issues a CRL with extra extensions.
func (ca *CA) CRLWith(tb testing.TB, thisUpdate, nextUpdate time.Time, exts []pkix.Extension, revoked ...*x509.Certificate) []byte {
	tb.Helper()
	var entries []x509.RevocationListEntry
	for _, c := range revoked {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(thisUpdate.Unix()),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
		ExtraExtensions:           exts,
	}, ca.Cert, ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// PEM encodes a certificate.
func PEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// CRLPEM encodes a CRL.
func CRLPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

func parse(tb testing.TB, der []byte) *x509.Certificate {
	tb.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// SelfSigned makes a self-signed signing certificate: a judge outside any
// court PKI.
func SelfSigned(tb testing.TB, name string, key crypto.Signer, now time.Time) *x509.Certificate {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return parse(tb, der)
}

// ECKeyP256 makes a P-256 key.
func ECKeyP256(tb testing.TB) *ecdsa.PrivateKey { return ECKey(tb, elliptic.P256()) }
