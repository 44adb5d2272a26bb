//go:build !appliance

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"time"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// demoCourt is the court PKI of the demo: a root CA and one judge, both
// with software keys. In production the root's key is offline and the
// judge's is on a PIV card.
type demoCourt struct {
	rootKey  *ecdsa.PrivateKey
	root     *x509.Certificate
	judgeKey *ecdsa.PrivateKey
	judge    *x509.Certificate
}

const (
	demoJudge = "Judge Ada Lovelace"
	// demoCourtName is the court the demo's root is pinned for, as its
	// warrants name it.
	demoCourtName = "District Court"
)

func newDemoCourt(now time.Time) (*demoCourt, error) {
	c := &demoCourt{}
	var err error
	if c.rootKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if c.judgeKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "District Court Root CA", Organization: []string{"District Court"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(5, 0, 0),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if c.root, err = issue(rootTmpl, rootTmpl, &c.rootKey.PublicKey, c.rootKey); err != nil {
		return nil, err
	}
	c.judge, err = issue(judgeTemplate(&c.judgeKey.PublicKey, now), c.root, &c.judgeKey.PublicKey, c.rootKey)
	return c, err
}

// judgeTemplate is a signing certificate as a court issues it to a judge's
// card: not a CA, digitalSignature and nonRepudiation, for signing documents
// (id-kp-documentSigning, RFC 9336).
func judgeTemplate(pub *ecdsa.PublicKey, now time.Time) *x509.Certificate {
	spki, _ := x509.MarshalPKIXPublicKey(pub)
	ski := sha256.Sum256(spki)
	return &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: demoJudge, Organization: []string{"District Court"}},
		SubjectKeyId: ski[:20], NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:           x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 36}},
	}
}

func issue(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// crl is an empty CRL valid for a day: the appliances refuse warrants
// without a fresh one.
func (c *demoCourt) crl(now time.Time) ([]byte, error) {
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(now.Unix()), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(24 * time.Hour),
	}, c.root, c.rootKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

func (c *demoCourt) judgeSigner() warrant.Signer {
	return warrant.Signer{Key: c.judgeKey, Chain: []*x509.Certificate{c.judge}}
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// installTrust is the court trust admin's work: the court PKI, and its root
// and a fresh CRL in each custodian's trust store.
func (d *demo) installTrust(context.Context) error {
	court, err := newDemoCourt(d.now)
	if err != nil {
		return err
	}
	d.court = court
	crl, err := court.crl(d.now)
	if err != nil {
		return err
	}
	if err := d.writeCourtFiles(crl); err != nil {
		return err
	}
	for _, c := range d.custodians {
		if err := installCourt(c.app, court.root, crl, d.now); err != nil {
			return fmt.Errorf("trust store of %s: %w", c.id, err)
		}
	}
	d.say("court trust admin", "made the court root CA and %s's certificate (for document signing); pinned the root for %q and installed a fresh CRL on every custodian", demoJudge, demoCourtName)
	return nil
}

// installCourt pins the court root and sets its CRL, each change logged
// and bound to the TPM as custodian trust does.
func installCourt(a *appliance.Appliance, root *x509.Certificate, crl []byte, now time.Time) error {
	s, err := trust.Open(filepath.Join(a.Dir, appliance.TrustDir))
	if err != nil {
		return err
	}
	rootPEM := certPEM(root)
	if err := a.ChangeTrust(rootPEM, time.Now(), func() error { _, err := s.AddRoot(rootPEM, demoCourtName); return err }); err != nil {
		return err
	}
	return a.ChangeTrust(crl, time.Now(), func() error { _, err := s.SetCRL(crl, now); return err })
}

// writeCourtFiles keeps the PKI for inspection: certificates, the CRL, and
// the judge's software key (which a PIV card would never let out).
func (d *demo) writeCourtFiles(crl []byte) error {
	key, err := x509.MarshalPKCS8PrivateKey(d.court.judgeKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"court-root.pem": certPEM(d.court.root),
		"judge.pem":      certPEM(d.court.judge),
		"judge-key.pem":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		"court.crl.pem":  crl,
	}
	for name, data := range files {
		if err := d.write(name, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
