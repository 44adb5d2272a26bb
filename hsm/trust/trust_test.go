package trust_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func TestStorePersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "trust")
	root := trusttest.NewRoot(t, "Court Root", now)
	s, err := trust.Open(dir)
	if err != nil || !s.Empty() || s.Policy().Signers != 1 {
		t.Fatalf("new store: %v empty=%v policy=%+v", err, s.Empty(), s.Policy())
	}
	if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCRL(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)), now); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(trust.Policy{Signers: 2, PolicyOIDs: []string{"1.2.3.4"}, EKUs: []string{trust.OIDDocumentSigning}}); err != nil {
		t.Fatal(err)
	}
	again, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Roots()) != 1 || again.Roots()[0].Court != "Court" || again.CRL(root.Cert) == nil || again.Policy().Signers != 2 ||
		len(again.Policy().EKUs) != 1 || again.CourtOf(root.Cert) != "Court" {
		t.Fatalf("reloaded store lost state: roots %d policy %+v", len(again.Roots()), again.Policy())
	}
}

func TestStoreRefuses(t *testing.T) {
	root := trusttest.NewRoot(t, "Court Root", now)
	judgeKey := trusttest.ECKeyP256(t)
	judge := root.Judge(t, "Judge", judgeKey.Public(), now)
	s := trust.New()
	if _, err := s.AddRoot(trusttest.PEM(judge), "Court"); err == nil {
		t.Error("pinned a certificate that is not a CA")
	}
	if _, err := s.AddRoot([]byte("not a certificate"), "Court"); err == nil {
		t.Error("pinned garbage")
	}
	if _, err := s.SetCRL(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)), now); err == nil {
		t.Error("stored a CRL of a root that is not pinned")
	}
	if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		t.Fatal(err)
	}
	impostor := trusttest.NewRoot(t, "Court Root", now)
	if _, err := s.SetCRL(impostor.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)), now); err == nil {
		t.Error("stored a CRL signed by an impostor with the root's name")
	}
	if _, err := s.SetCRL(root.CRL(t, now.Add(-3*time.Hour), now.Add(-time.Hour)), now); err == nil {
		t.Error("stored a CRL past its next update")
	}
	if _, err := s.SetCRL(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)), now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCRL(root.CRL(t, now.Add(-2*time.Hour), now.Add(time.Hour)), now); err == nil {
		t.Error("rolled a CRL back to an older one")
	}
	for _, p := range []trust.Policy{{Signers: 0}, {Signers: 9}, {Signers: 1, EKUs: []string{"not-an-oid"}},
		{Signers: 1, PolicyOIDs: []string{"1.02.3"}, EKUs: trust.DefaultEKUs()}, {Signers: 1}, {Signers: 1, EKUs: []string{}}} {
		if err := s.SetPolicy(p); err == nil {
			t.Errorf("accepted policy %+v", p)
		}
	}
}

// TestOpenRechecksCRLs: a CRL edited on disk no longer verifies, and the
// store sets it aside rather than trust it: its issuer has no CRL.
func TestOpenRechecksCRLs(t *testing.T) {
	dir := t.TempDir()
	root := trusttest.NewRoot(t, "Court Root", now)
	s, _ := trust.Open(dir)
	if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCRL(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)), now); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "crls", "*.pem"))
	if len(files) != 1 {
		t.Fatalf("%d CRL files", len(files))
	}
	other := trusttest.NewRoot(t, "Court Root", now)
	if err := os.WriteFile(files[0], trusttest.CRLPEM(other.CRL(t, now, now.Add(time.Hour))), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.CRL(root.Cert) != nil || again.UnusableCRL(root.Cert) == nil {
		t.Fatal("a forged CRL is in force")
	}
}

func TestCRLFreshness(t *testing.T) {
	root := trusttest.NewRoot(t, "Court Root", now)
	s := trust.New()
	s.AddRoot(trusttest.PEM(root.Cert), "Court")
	crl, err := s.SetCRL(root.CRL(t, now.Add(-time.Hour), now.Add(time.Hour)), now)
	if err != nil {
		t.Fatal(err)
	}
	for at, want := range map[time.Time]bool{
		now: true, now.Add(-2 * time.Hour): false, now.Add(time.Hour): false, now.Add(59 * time.Minute): true,
	} {
		if crl.Fresh(at) != want {
			t.Errorf("Fresh(%v) = %v, want %v", at, !want, want)
		}
	}
}

// TestInvariantCRLWithoutNextUpdateIsNeverFresh: a CRL that does not say
// when it stops being current is never fresh: it would keep a revoked
// judge's status frozen forever. The list itself verifies (so the refusal
// is about freshness, not the signature).
func TestInvariantCRLWithoutNextUpdateIsNeverFresh(t *testing.T) {
	root := trusttest.NewRoot(t, "Court Root", now)
	der := root.CRLWithoutNextUpdate(t, now.Add(-time.Hour))
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if !list.NextUpdate.IsZero() || list.CheckSignatureFrom(root.Cert) != nil {
		t.Fatalf("the test CRL: next update %v, signature %v", list.NextUpdate, list.CheckSignatureFrom(root.Cert))
	}
	s := trust.New()
	if _, err := s.AddRoot(trusttest.PEM(root.Cert), "Court"); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{now, now.Add(-30 * time.Minute), now.Add(24 * 365 * time.Hour)} {
		if _, err := s.SetCRL(der, at); err == nil || !strings.Contains(err.Error(), "not in force") {
			t.Errorf("at %v: stored a CRL without nextUpdate (%v)", at, err)
		}
	}
	if s.CRL(root.Cert) != nil {
		t.Fatal("the store holds the CRL")
	}
}

// TestPartialCRLRefused: a CRL that covers only part of the issuer's
// certificates would make a missing serial look unrevoked.
func TestPartialCRLRefused(t *testing.T) {
	root := trusttest.NewRoot(t, "Court Root", now)
	s := trust.New()
	s.AddRoot(trusttest.PEM(root.Cert), "Court")
	// IssuingDistributionPoint with onlyContainsCACerts.
	idp := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: []byte{0x30, 0x03, 0x82, 0x01, 0xff}}
	delta := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{0x02, 0x01, 0x01}}
	unknown := pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{0x05, 0x00}}
	for _, ext := range []pkix.Extension{idp, delta, unknown} {
		crl := root.CRLWith(t, now.Add(-time.Hour), now.Add(time.Hour), []pkix.Extension{ext})
		if _, err := s.SetCRL(crl, now); err == nil {
			t.Errorf("stored a CRL with extension %v", ext.Id)
		}
	}
}
