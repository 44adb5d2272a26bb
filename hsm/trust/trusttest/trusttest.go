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
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
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

// OIDDocumentSigning is id-kp-documentSigning (RFC 9336), the signing
// purpose judges' certificates carry here.
var OIDDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}

// NewRoot makes a self-signed root CA valid from now-1y to now+10y; edit
// may change the template.
func NewRoot(tb testing.TB, name string, now time.Time, edit ...func(*x509.Certificate)) *CA {
	tb.Helper()
	key := ECKey(tb, elliptic.P256())
	return &CA{Cert: NewRootWithKey(tb, name, now, key, edit...), Key: key}
}

// NewRootWithKey makes a self-signed root CA certificate for key, as a
// court re-issues its root with the same key.
func NewRootWithKey(tb testing.TB, name string, now time.Time, key crypto.Signer, edit ...func(*x509.Certificate)) *x509.Certificate {
	tb.Helper()
	tmpl := caTemplate(name, now)
	for _, e := range edit {
		e(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return parse(tb, der)
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

// Intermediate makes a CA certificate issued by ca; edit may change the
// template.
func (ca *CA) Intermediate(tb testing.TB, name string, now time.Time, edit ...func(*x509.Certificate)) *CA {
	tb.Helper()
	key := ECKey(tb, elliptic.P256())
	tmpl := caTemplate(name, now)
	for _, e := range edit {
		e(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return &CA{Cert: parse(tb, der), Key: key}
}

// Judge issues a signing certificate for pub, valid from now-30d to
// now+1y with digitalSignature usage and the documentSigning extended key
// usage; edit may change the template.
func (ca *CA) Judge(tb testing.TB, name string, pub crypto.PublicKey, now time.Time, edit ...func(*x509.Certificate)) *x509.Certificate {
	tb.Helper()
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	ski := sha256.Sum256(spki) // RFC 7093, method 1
	tmpl := &x509.Certificate{
		SerialNumber:       nextSerial(),
		Subject:            pkix.Name{CommonName: name, Organization: []string{"Test Courts"}},
		SubjectKeyId:       ski[:20],
		NotBefore:          now.Add(-30 * 24 * time.Hour),
		NotAfter:           now.Add(365 * 24 * time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDDocumentSigning},
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

// CRLWithoutNextUpdate issues a CRL from thisUpdate with no nextUpdate at
// all: a list that never says when it stops being current. RFC 5280 makes
// the field mandatory for conforming issuers, but the ASN.1 keeps it
// optional, so a CRL like this parses; crypto/x509 cannot make one, so
// the field is cut from the TBS of one it made, which is then signed again.
func (ca *CA) CRLWithoutNextUpdate(tb testing.TB, thisUpdate time.Time, revoked ...*x509.Certificate) []byte {
	tb.Helper()
	full := ca.CRL(tb, thisUpdate, thisUpdate.Add(time.Hour), revoked...)
	var list, tbs, rest, sigAlg cryptobyte.String
	input := cryptobyte.String(full)
	if !input.ReadASN1(&list, cbasn1.SEQUENCE) || !list.ReadASN1Element(&tbs, cbasn1.SEQUENCE) ||
		!list.ReadASN1Element(&sigAlg, cbasn1.SEQUENCE) || !tbs.ReadASN1(&rest, cbasn1.SEQUENCE) {
		tb.Fatal("cannot read the CRL crypto/x509 made")
	}
	// TBSCertList: version, signature, issuer, thisUpdate, nextUpdate, …
	var head [4]cryptobyte.String
	for i := range head {
		var tag cbasn1.Tag
		if !rest.ReadAnyASN1Element(&head[i], &tag) {
			tb.Fatal("short TBSCertList")
		}
	}
	var next cryptobyte.String
	var tag cbasn1.Tag
	if !rest.ReadAnyASN1Element(&next, &tag) || (tag != cbasn1.UTCTime && tag != cbasn1.GeneralizedTime) {
		tb.Fatal("the CRL has no nextUpdate to cut")
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(t *cryptobyte.Builder) {
		for _, h := range head {
			t.AddBytes(h)
		}
		t.AddBytes(rest)
	})
	newTBS := b.BytesOrPanic()
	digest := sha256.Sum256(newTBS)
	sig, err := ca.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		tb.Fatal(err)
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(l *cryptobyte.Builder) {
		l.AddBytes(newTBS)
		l.AddBytes(sigAlg)
		l.AddASN1BitString(sig)
	})
	return out.BytesOrPanic()
}

// DirectoryNameConstraint is a name constraints extension whose one
// permitted subtree is a directoryName: a form crypto/x509 does not
// evaluate.
func DirectoryNameConstraint(tb testing.TB, critical bool, name pkix.Name) pkix.Extension {
	tb.Helper()
	dn, err := asn1.Marshal(name.ToRDNSequence())
	if err != nil {
		tb.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(nc *cryptobyte.Builder) {
		nc.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(subtrees *cryptobyte.Builder) {
			subtrees.AddASN1(cbasn1.SEQUENCE, func(subtree *cryptobyte.Builder) {
				subtree.AddASN1(cbasn1.Tag(4).ContextSpecific().Constructed(), func(base *cryptobyte.Builder) {
					base.AddBytes(dn)
				})
			})
		})
	})
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 30}, Critical: critical, Value: b.BytesOrPanic()}
}

// PEM encodes a certificate.
func PEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// PinUnchecked writes a root file into the trust store at dir as a store
// written before custodian trust add-root refused roots that issued one
// another: for showing what the verifier does with such a store. Open the
// store after it.
func PinUnchecked(tb testing.TB, dir string, c *x509.Certificate, court string) {
	tb.Helper()
	f, err := json.Marshal(struct {
		Version     int    `json:"version"`
		Court       string `json:"court"`
		Certificate []byte `json:"certificate"`
	}{1, court, c.Raw})
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(c.Raw)
	if err := os.MkdirAll(filepath.Join(dir, "roots"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "roots", hex.EncodeToString(sum[:])+".json"), f, 0o644); err != nil {
		tb.Fatal(err)
	}
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
		SerialNumber:       nextSerial(),
		Subject:            pkix.Name{CommonName: name},
		NotBefore:          now.Add(-time.Hour),
		NotAfter:           now.Add(time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{OIDDocumentSigning},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return parse(tb, der)
}

// ECKeyP256 makes a P-256 key.
func ECKeyP256(tb testing.TB) *ecdsa.PrivateKey { return ECKey(tb, elliptic.P256()) }
