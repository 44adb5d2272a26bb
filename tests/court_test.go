package tests

import (
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// TestInvariantReplayNamespacedByCourtRoot, on the release daemon: two
// courts' warrants with the same serial both release; the same root's
// serial is refused the second time, even signed anew; a judge of one
// court cannot write another court's name, and a court's TLS server
// certificate signs nothing.
func TestInvariantReplayNamespacedByCourtRoot(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	now := time.Now().UTC()
	r.court.install(t, r.a, now)
	const otherName = "Other Court"
	other := newCourt(t, now)
	s, err := trust.Open(filepath.Join(r.a.Dir, appliance.TrustDir))
	if err != nil {
		t.Fatal(err)
	}
	otherRoot := trusttest.PEM(other.root.Cert)
	if err := r.a.ChangeTrust(otherRoot, now, func() error { _, err := s.AddRoot(otherRoot, otherName); return err }); err != nil {
		t.Fatal(err)
	}
	otherCRL := trusttest.CRLPEM(other.root.CRL(t, now.Add(-time.Minute), now.Add(24*time.Hour)))
	if err := r.a.ChangeTrust(otherCRL, now, func() error { _, err := s.SetCRL(otherCRL, now); return err }); err != nil {
		t.Fatal(err)
	}
	signAs := func(c *court, courtName, serial string) []byte {
		w := draftWarrant(serial, r.agency.Public(), []string{"court-a"}, []string{"2026-11"}, now)
		w.Court = courtName
		return c.signDocument(t, w, time.Now().UTC())
	}

	r.releaseOK(t, signAs(r.court, testCourt, "W-shared"))
	r.releaseOK(t, signAs(other, otherName, "W-shared"))
	r.expectRefusal(t, signAs(r.court, testCourt, "W-shared"), release.CodeReplayed, true)
	r.expectRefusal(t, signAs(other, otherName, "W-shared"), release.CodeReplayed, true)

	r.expectRefusal(t, signAs(other, testCourt, "W-borrowed"), release.Code(warrant.ReasonCourtMismatch), false)

	key := trusttest.ECKeyP256(t)
	tlsCert := r.court.root.Judge(t, "court-a.example", key.Public(), now, func(c *x509.Certificate) {
		c.ExtKeyUsage, c.UnknownExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil
		c.DNSNames = []string{"court-a.example"}
	})
	server := &court{root: r.court.root, key: key, judge: tlsCert}
	r.expectRefusal(t, signAs(server, testCourt, "W-tls"), release.Code(warrant.ReasonExtKeyUsage), false)
}
