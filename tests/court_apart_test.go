package tests

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// TestInvariantSignerChainsToOneCourtDaemon, on the release daemon: the
// Test Court's root issued the CA of a second court. Pinning that CA for
// the second court is refused; in a store that holds it from before, a
// judge of the second court who writes "Test Court" and attaches its CA
// certificate is refused (court_mismatch) and spends nothing: the Test
// Court's own warrant with that serial still releases.
func TestInvariantSignerChainsToOneCourtDaemon(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	now := time.Now().UTC()
	r.court.install(t, r.a, now)
	const courtB = "District Court of Elsewhere"
	caB := r.court.root.Intermediate(t, courtB+" CA", now)
	dir := filepath.Join(r.a.Dir, appliance.TrustDir)
	s, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	pemB := trusttest.PEM(caB.Cert)
	err = r.a.ChangeTrust(pemB, now, func() error { _, err := s.AddRoot(pemB, courtB); return err })
	if err == nil || !strings.Contains(err.Error(), "pin only the top root") {
		t.Fatalf("pinning a court CA that the Test Court's root issued: %v", err)
	}
	if err := r.a.ChangeTrust(pemB, now, func() error { trusttest.PinUnchecked(t, dir, caB.Cert, courtB); return nil }); err != nil {
		t.Fatal(err)
	}
	if s, err = trust.Open(dir); err != nil {
		t.Fatal(err)
	}
	crlB := trusttest.CRLPEM(caB.CRL(t, now.Add(-time.Minute), now.Add(24*time.Hour)))
	if err := r.a.ChangeTrust(crlB, now, func() error { _, err := s.SetCRL(crlB, now); return err }); err != nil {
		t.Fatal(err)
	}
	keyB := trusttest.ECKeyP256(t)
	judgeB := caB.Judge(t, "Judge Bea of Elsewhere", keyB.Public(), now)

	w := draftWarrant("W-A-0001", r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
	content, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	p7s, err := warrant.Sign(content, []warrant.Signer{{Key: keyB, Chain: []*x509.Certificate{judgeB, caB.Cert}}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r.expectRefusal(t, p7s, release.Code(warrant.ReasonCourtMismatch), false)
	r.releaseOK(t, r.court.signDocument(t, w, time.Now().UTC()))
}
