package trust_test

import (
	"bytes"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// twoCourts is a store on disk with two courts pinned, each with a CRL of
// its root, set at setAt.
func twoCourts(t *testing.T, setAt time.Time) (dir string, a, b *trusttest.CA) {
	t.Helper()
	dir = t.TempDir()
	s, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a = trusttest.NewRoot(t, "Court A Root", setAt)
	b = trusttest.NewRoot(t, "Court B Root", setAt)
	for court, ca := range map[string]*trusttest.CA{"Court A": a, "Court B": b} {
		if _, err := s.AddRoot(trusttest.PEM(ca.Cert), court); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetCRL(ca.CRL(t, setAt.Add(-time.Minute), setAt.Add(24*time.Hour)), setAt); err != nil {
			t.Fatal(err)
		}
	}
	return dir, a, b
}

func setCRL(t *testing.T, dir string, data []byte, at time.Time) {
	t.Helper()
	s, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCRL(data, at); err != nil {
		t.Fatalf("set-crl: %v", err)
	}
}

// reopened opens dir again and returns the CRL now in force for issuer.
func reopened(t *testing.T, dir string, issuer *x509.Certificate) (*trust.Store, *trust.CRL) {
	t.Helper()
	s, err := trust.Open(dir)
	if err != nil {
		t.Fatalf("the trust store no longer opens: %v", err)
	}
	return s, s.CRL(issuer)
}

// TestInvariantCRLStoredWithItsCheckedChain: the CRL of an issuing CA two
// levels below the root (root → policy CA → issuing CA), installed with
// its chain appended as the runbook says, is stored with that chain and
// still verifies when the store is opened again.
func TestInvariantCRLStoredWithItsCheckedChain(t *testing.T) {
	at := time.Now()
	dir, a, _ := twoCourts(t, at)
	policyCA := a.Intermediate(t, "Court A Policy CA", at)
	issuing := policyCA.Intermediate(t, "Court A Issuing CA", at)
	file := trusttest.CRLPEM(issuing.CRL(t, at.Add(-time.Minute), at.Add(time.Hour)))
	file = append(file, trusttest.PEM(issuing.Cert)...)
	file = append(file, trusttest.PEM(policyCA.Cert)...)
	setCRL(t, dir, file, at)
	s, crl := reopened(t, dir, issuing.Cert)
	if crl == nil {
		t.Fatalf("the issuing CA's CRL did not verify again at open: %v", s.UnusableCRL(issuing.Cert))
	}
	if len(crl.Chain) != 2 || !crl.Chain[0].Equal(issuing.Cert) || !crl.Chain[1].Equal(policyCA.Cert) {
		t.Fatalf("stored chain has %d certificates, want issuing CA then policy CA", len(crl.Chain))
	}
}

// TestInvariantRootRolloverCRLVerifiesAgain: a court that rolls its root
// key with a NewWithOld link certificate (self-issued: subject = issuer =
// the root's name, new key, signed by the pinned old key) signs its CRLs
// with the new key; the link certificate is kept with the CRL, not taken
// for a pinned root, so the CRL verifies again at open and covers the
// certificates the new key issues.
func TestInvariantRootRolloverCRLVerifiesAgain(t *testing.T) {
	at := time.Now()
	dir, a, _ := twoCourts(t, at)
	newKey := trusttest.ECKey(t, elliptic.P256())
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(777), Subject: a.Cert.Subject,
		NotBefore: at.Add(-time.Hour), NotAfter: at.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, newKey.Public(), a.Key)
	if err != nil {
		t.Fatal(err)
	}
	link, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	rolled := &trusttest.CA{Cert: link, Key: newKey}
	setCRL(t, dir, append(trusttest.CRLPEM(rolled.CRL(t, at.Add(-time.Minute), at.Add(time.Hour))), trusttest.PEM(link)...), at)
	s, crl := reopened(t, dir, link)
	if crl == nil {
		t.Fatalf("the rolled-over root's CRL did not verify again at open: %v", s.UnusableCRL(link))
	}
	if s.CRL(a.Cert) == nil {
		t.Fatal("the old root key's CRL was lost")
	}
}

// TestInvariantUnusableCRLFailsClosedForItsIssuerOnly: a stored CRL that no
// longer verifies at open (here: the intermediate CA that issued it has
// expired since) leaves the store usable. Its issuer has no CRL, so its
// certificates stay refused (crl_missing), the other court's CRL is in
// force, the store names the CRL and why, and the trust admin can still
// set CRLs.
func TestInvariantUnusableCRLFailsClosedForItsIssuerOnly(t *testing.T) {
	wall := time.Now()
	setAt := wall.Add(-48 * time.Hour)
	dir, a, b := twoCourts(t, setAt)
	inter := a.Intermediate(t, "Court A Issuing CA 2020", setAt, func(c *x509.Certificate) { c.NotAfter = wall.Add(-24 * time.Hour) })
	setCRL(t, dir, append(trusttest.CRLPEM(inter.CRL(t, setAt.Add(-time.Minute), setAt.Add(time.Hour))), trusttest.PEM(inter.Cert)...), setAt)

	s, crl := reopened(t, dir, inter.Cert)
	if crl != nil {
		t.Fatal("a CRL whose issuer expired is still in force")
	}
	if err := s.UnusableCRL(inter.Cert); err == nil || !strings.Contains(err.Error(), "Court A Issuing CA 2020") {
		t.Fatalf("UnusableCRL = %v, want the reason naming the issuer", err)
	}
	if u := s.UnusableCRLs(); len(u) != 1 || u[0].IssuerID != trust.IssuerID(inter.Cert) || u[0].List == nil {
		t.Fatalf("UnusableCRLs = %+v", u)
	}
	if s.CRL(b.Cert) == nil || s.CRL(a.Cert) == nil {
		t.Fatal("the roots' CRLs are not in force beside an unusable one")
	}
	// The admin can still change the store.
	if _, err := s.SetCRL(b.CRL(t, wall.Add(-time.Minute), wall.Add(time.Hour)), wall); err != nil {
		t.Fatalf("set-crl beside an unusable CRL: %v", err)
	}
}

// TestInvariantUnusableCRLIsReplacedNotRolledBack: a CRL stored without its
// chain (as an older version stored an issuing CA's CRL) is set aside at
// open; set-crl with the chain replaces it, but not with a CRL older than
// the one set aside.
func TestInvariantUnusableCRLIsReplacedNotRolledBack(t *testing.T) {
	at := time.Now()
	dir, a, _ := twoCourts(t, at)
	policyCA := a.Intermediate(t, "Court A Policy CA", at)
	issuing := policyCA.Intermediate(t, "Court A Issuing CA", at)
	withChain := func(crl []byte) []byte {
		return append(append(trusttest.CRLPEM(crl), trusttest.PEM(issuing.Cert)...), trusttest.PEM(policyCA.Cert)...)
	}
	setCRL(t, dir, withChain(issuing.CRL(t, at.Add(-time.Minute), at.Add(time.Hour))), at)
	// Cut the stored file down to the CRL and its issuer alone.
	path := filepath.Join(dir, "crls", trust.IssuerID(issuing.Cert)+".pem")
	stored, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := stored[:strings.Index(string(stored), "-----BEGIN CERTIFICATE-----")]
	if err := os.WriteFile(path, append(cut, trusttest.PEM(issuing.Cert)...), 0o644); err != nil {
		t.Fatal(err)
	}
	s, crl := reopened(t, dir, issuing.Cert)
	if crl != nil || s.UnusableCRL(issuing.Cert) == nil {
		t.Fatal("a CRL whose issuer no longer chains to a pinned root is in force")
	}
	if _, err := s.SetCRL(withChain(issuing.CRL(t, at.Add(-time.Hour), at.Add(time.Hour))), at); err == nil {
		t.Fatal("replaced an unusable CRL with an older one")
	}
	if _, err := s.SetCRL(withChain(issuing.CRL(t, at, at.Add(time.Hour))), at); err != nil {
		t.Fatalf("set-crl could not replace the unusable CRL: %v", err)
	}
	s, crl = reopened(t, dir, issuing.Cert)
	if crl == nil || len(s.UnusableCRLs()) != 0 {
		t.Fatalf("the replacement is not in force: %v", s.UnusableCRL(issuing.Cert))
	}
}

// FuzzStoredCRL feeds any bytes as a stored CRL file through Open: the
// store always opens, the file is either in force and verifies against
// the pinned root (the seed) or is set aside, and it never panics.
func FuzzStoredCRL(f *testing.F) {
	at := time.Now()
	root := trusttest.NewRoot(f, "Court Root", at)
	inter := root.Intermediate(f, "Court Issuing CA", at)
	dir := f.TempDir()
	s, err := trust.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		f.Fatal(err)
	}
	if _, err := s.SetCRL(append(trusttest.CRLPEM(inter.CRL(f, at.Add(-time.Minute), at.Add(time.Hour))), trusttest.PEM(inter.Cert)...), at); err != nil {
		f.Fatal(err)
	}
	name := trust.IssuerID(inter.Cert) + ".pem"
	good, err := os.ReadFile(filepath.Join(dir, "crls", name))
	if err != nil {
		f.Fatal(err)
	}
	rootFiles, _ := filepath.Glob(filepath.Join(dir, "roots", "*.json"))
	rootFile, _ := os.ReadFile(rootFiles[0])
	f.Add(good)
	f.Add(trusttest.CRLPEM(inter.CRL(f, at, at.Add(time.Hour))))
	f.Add(root.CRL(f, at, at.Add(time.Hour)))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := t.TempDir()
		for path, content := range map[string][]byte{
			filepath.Join("roots", filepath.Base(rootFiles[0])): rootFile,
			filepath.Join("crls", name):                         data,
		} {
			if err := os.MkdirAll(filepath.Join(d, filepath.Dir(path)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, path), content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s, err := trust.Open(d)
		if err != nil {
			t.Fatalf("a stored CRL file stopped the store from opening: %v", err)
		}
		inForce, setAside := s.CRL(inter.Cert), s.UnusableCRL(inter.Cert)
		if (inForce == nil) == (setAside == nil) {
			t.Fatalf("the CRL file is both or neither in force (%v) and set aside (%v)", inForce != nil, setAside)
		}
		if inForce != nil && inForce.List.CheckSignatureFrom(inter.Cert) != nil {
			t.Fatal("a CRL in force does not verify against its issuer")
		}
	})
}

// TestInvariantCRLSignatureKeptOnlyForTheSameBytes: a CRL whose signature
// checked once is accepted again without the check only byte for byte; the
// same list with its signature damaged is refused, before and after.
func TestInvariantCRLSignatureKeptOnlyForTheSameBytes(t *testing.T) {
	now := time.Now()
	root := trusttest.NewRoot(t, "Kept Root", now)
	der := root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour))
	damaged := bytes.Clone(der)
	damaged[len(damaged)-1] ^= 1
	for range 2 {
		s := trust.New()
		if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Kept Court"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetCRL(damaged, now); err == nil || !strings.Contains(err.Error(), "not signed by a pinned root") {
			t.Fatalf("a CRL with a damaged signature: got %v, want a refusal of its signature", err)
		}
		if _, err := s.SetCRL(der, now); err != nil {
			t.Fatal(err)
		}
	}
}
