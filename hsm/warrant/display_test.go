package warrant

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// TestInvariantRecipientIsTheOneLineKey: the recipient must be exactly the
// key's one-line form; the line break a .pub file ends in, or white space
// around the key, would reach the officer's display and give one key a
// second encoding.
func TestInvariantRecipientIsTheOneLineKey(t *testing.T) {
	f := newFixture(t)
	for _, r := range []string{f.recipient + "\n", f.recipient + " ", " " + f.recipient, f.recipient + "\r\n"} {
		w := f.warrant()
		w.Recipient = r
		doc, err := jsonMarshal(w)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.verifier().Verify(f.sign(t, doc, f.signer())); ReasonOf(err) != ReasonBadRecipient {
			t.Errorf("recipient …%q: %v, want %s", r[len(r)-6:], err, ReasonBadRecipient)
		}
		if _, err := w.Marshal(0); ReasonOf(err) != ReasonBadRecipient {
			t.Errorf("warrant new wrote recipient …%q: %v", r[len(r)-6:], err)
		}
	}
	if _, err := f.verifier().Verify(f.sign(t, f.content(t, f.warrant()), f.signer())); err != nil {
		t.Fatalf("the one-line key refused: %v", err)
	}
}

// TestInvariantEnvelopeCountsAreUnambiguous: a target may hold ": " and
// ", ", the separators of the display's per-target envelope counts; each
// target is shown quoted, so the line reads one way only.
func TestInvariantEnvelopeCountsAreUnambiguous(t *testing.T) {
	f := newFixture(t)
	w := f.warrant()
	w.Targets = []string{"alice@example.org", `alice@example.org: 0, "bob@example.org`}
	for i := range 5 {
		w.Envelopes = append(w.Envelopes, EnvelopeRef{KeyID: "2026-11", Target: w.Targets[1], Enc: testEnc(i)})
	}
	v, err := f.verifier().Verify(f.sign(t, f.content(t, w), f.signer()))
	if err != nil {
		t.Fatal(err)
	}
	want := "Envelopes:  5 (\"alice@example.org: 0, \\\"bob@example.org\": 5)\n"
	if s := Summary(v.Warrant, v.Signers); !strings.Contains(s, want) {
		t.Fatalf("display lacks %q:\n%s", want, s)
	}
}

// TestInvariantUnusableCRLRefusesOnlyItsIssuersSigners: a stored CRL that
// no longer verifies when the store is opened (here: written without the
// chain to its issuer) leaves that issuer without a CRL, so its judges are
// refused (crl_missing, saying why), while the judges of the root's own
// CRL and of every other court still verify.
func TestInvariantUnusableCRLRefusesOnlyItsIssuersSigners(t *testing.T) {
	dir := t.TempDir()
	s, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	f.store = s
	if _, err := s.AddRoot(trusttest.PEM(f.root.Cert), testCourt); err != nil {
		t.Fatal(err)
	}
	f.setCRL(t, f.root.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour)))
	other := f.otherCourt(t, "High Court of Testing")
	policyCA := f.root.Intermediate(t, "Test Court Policy CA", testNow)
	issuing := policyCA.Intermediate(t, "Test Court Issuing CA", testNow)
	// An issuing CA's CRL with its issuer only, as stored before the chain
	// was kept: Open cannot chain it to the root.
	if err := writeFile(dir, "crls/"+trust.IssuerID(issuing.Cert)+".pem",
		append(trusttest.CRLPEM(issuing.CRL(t, testNow.Add(-time.Hour), testNow.Add(time.Hour))), trusttest.PEM(issuing.Cert)...)); err != nil {
		t.Fatal(err)
	}
	if f.store, err = trust.Open(dir); err != nil {
		t.Fatalf("the trust store no longer opens: %v", err)
	}
	key := trusttest.ECKeyP256(t)
	judge := issuing.Judge(t, "Judge Under Issuing CA", key.Public(), testNow)
	p7s := f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{judge, issuing.Cert, policyCA.Cert}})
	_, err = f.verifier().Verify(p7s)
	if ReasonOf(err) != ReasonCRLMissing || !strings.Contains(err.Error(), "no longer verifies") {
		t.Fatalf("judge under the unusable CRL: %v, want %s saying the CRL no longer verifies", err, ReasonCRLMissing)
	}
	if _, err := f.verifier().Verify(f.sign(t, f.content(t, f.warrant()), f.signer())); err != nil {
		t.Fatalf("a judge under the root's CRL refused: %v", err)
	}
	w := f.warrant()
	w.Court = "High Court of Testing"
	if _, err := f.verifier().Verify(f.sign(t, f.content(t, w), other)); err != nil {
		t.Fatalf("the other court's judge refused: %v", err)
	}
}

func writeFile(dir, name string, data []byte) error {
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
