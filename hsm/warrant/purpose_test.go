package warrant

import (
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

func ekus(oids ...asn1.ObjectIdentifier) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.ExtKeyUsage, c.UnknownExtKeyUsage = nil, oids }
}

var (
	oidServerAuth      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidEmailProtection = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 4}
	oidAnyEKU          = asn1.ObjectIdentifier{2, 5, 29, 37, 0}
)

// checkOutcome verifies p7s and compares the reason with want ("" for
// accepted).
func checkOutcome(t *testing.T, f *fixture, p7s []byte, want Reason) {
	t.Helper()
	_, err := f.verifier().Verify(p7s)
	if ReasonOf(err) != want || (want == "" && err != nil) {
		t.Fatalf("got %v (reason %q), want reason %q", err, ReasonOf(err), want)
	}
}

// TestInvariantSignerNeedsSigningPurposeAlongChain: a certificate signs a
// warrant only if it carries an accepted signing EKU (documentSigning or
// emailProtection by default) that every CA above it allows.
func TestInvariantSignerNeedsSigningPurposeAlongChain(t *testing.T) {
	cases := []struct {
		name            string
		accepted        []string // nil: the default policy
		inter, judge    func(*x509.Certificate)
		viaIntermediate bool
		want            Reason
	}{
		{name: "documentSigning", judge: ekus(trusttest.OIDDocumentSigning)},
		{name: "emailProtection", judge: ekus(oidEmailProtection)},
		{name: "tls server only", judge: ekus(oidServerAuth), want: ReasonExtKeyUsage},
		{name: "tls server and documentSigning", judge: ekus(oidServerAuth, trusttest.OIDDocumentSigning)},
		{name: "no eku extension", judge: ekus(), want: ReasonExtKeyUsage},
		{name: "anyExtendedKeyUsage by default", judge: ekus(oidAnyEKU), want: ReasonExtKeyUsage},
		{name: "anyExtendedKeyUsage when listed", accepted: []string{trust.OIDAnyExtKeyUsage}, judge: ekus(oidAnyEKU)},
		{name: "narrowed to documentSigning", accepted: []string{trust.OIDDocumentSigning}, judge: ekus(oidEmailProtection), want: ReasonExtKeyUsage},
		{name: "widened to a court's own purpose", accepted: []string{"1.3.6.1.4.1.99999.3"}, judge: ekus(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 3})},
		{name: "intermediate without eku", viaIntermediate: true},
		{name: "intermediate for documentSigning", viaIntermediate: true, inter: ekus(trusttest.OIDDocumentSigning)},
		{name: "intermediate for any purpose", viaIntermediate: true, inter: ekus(oidAnyEKU)},
		{name: "intermediate for tls only", viaIntermediate: true, inter: ekus(oidServerAuth), want: ReasonExtKeyUsage},
		{name: "intermediate for email, judge for documents", viaIntermediate: true, inter: ekus(oidEmailProtection), want: ReasonExtKeyUsage},
		{name: "intermediate and judge for email", viaIntermediate: true, inter: ekus(oidEmailProtection), judge: ekus(oidEmailProtection, trusttest.OIDDocumentSigning)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.accepted != nil {
				if err := f.store.SetPolicy(trust.Policy{Signers: 1, EKUs: tc.accepted}); err != nil {
					t.Fatal(err)
				}
			}
			var p7s []byte
			if tc.viaIntermediate {
				p7s = f.signedUnder(t, f.warrant(), tc.inter, tc.judge)
			} else {
				key := trusttest.ECKey(t, elliptic.P256())
				cert := f.root.Judge(t, "Judge Purpose", key.Public(), testNow, tc.judge)
				p7s = f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{cert}})
			}
			checkOutcome(t, f, p7s, tc.want)
		})
	}
}

// TestInvariantPolicyCannotAcceptAnyPurpose: an approval policy without
// accepted EKUs is refused when set.
func TestInvariantPolicyCannotAcceptAnyPurpose(t *testing.T) {
	f := newFixture(t)
	for _, ekus := range [][]string{nil, {}} {
		if err := f.store.SetPolicy(trust.Policy{Signers: 1, EKUs: ekus}); err == nil {
			t.Fatalf("set a policy accepting any purpose (%v)", ekus)
		}
	}
	if got := f.store.Policy().EKUs; len(got) != 2 {
		t.Fatalf("policy changed to %v", got)
	}
}

// inhibitAnyPolicy is the inhibitAnyPolicy extension with skipCerts 0.
var inhibitAnyPolicy = pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 54}, Critical: true, Value: []byte{2, 1, 0}}

// TestInvariantCertificatePoliciesAlongPath: a required certificate policy
// must be asserted by every certificate below the root, not only by the
// judge's.
func TestInvariantCertificatePoliciesAlongPath(t *testing.T) {
	anyPolicy := func(c *x509.Certificate) {
		o, _ := x509.ParseOID("2.5.29.32.0")
		c.Policies = append(c.Policies, o)
	}
	cases := []struct {
		name         string
		inter, judge func(*x509.Certificate)
		want         Reason
	}{
		{name: "asserted along the path", inter: withPolicy, judge: withPolicy},
		{name: "missing at the intermediate", judge: withPolicy, want: ReasonMissingPolicy},
		{name: "missing at the judge", inter: withPolicy, want: ReasonMissingPolicy},
		{name: "intermediate asserts anyPolicy", inter: anyPolicy, judge: withPolicy},
		{name: "anyPolicy inhibited", inter: func(c *x509.Certificate) {
			anyPolicy(c)
			c.ExtraExtensions = append(c.ExtraExtensions, inhibitAnyPolicy)
		}, judge: withPolicy, want: ReasonMissingPolicy},
		{name: "judge asserts only anyPolicy", inter: withPolicy, judge: anyPolicy, want: ReasonMissingPolicy},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.requirePolicy(t)
			checkOutcome(t, f, f.signedUnder(t, f.warrant(), tc.inter, tc.judge), tc.want)
		})
	}
}

// TestInvariantUnevaluableNameConstraintsFailClosed: a name constraint Go's
// verifier skips (directoryName here) refuses the chain whether it is
// marked critical or not; on a root, pinning is refused.
func TestInvariantUnevaluableNameConstraintsFailClosed(t *testing.T) {
	for _, critical := range []bool{false, true} {
		f := newFixture(t)
		// No CRL of the intermediate: its name constraint is refused
		// first (and set-crl refuses a critical one).
		inter := f.root.Intermediate(t, "Constrained CA", testNow, func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, trusttest.DirectoryNameConstraint(t, critical, c.Subject))
		})
		key := trusttest.ECKey(t, elliptic.P256())
		judge := Signer{Key: key, Chain: []*x509.Certificate{inter.Judge(t, "Judge Constrained", key.Public(), testNow), inter.Cert}}
		checkOutcome(t, f, f.sign(t, f.content(t, f.warrant()), judge), ReasonNameConstraints)

		root := trusttest.NewRoot(t, "Constrained Root", testNow, func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, trusttest.DirectoryNameConstraint(t, critical, c.Subject))
		})
		if _, err := trust.New().AddRoot(trusttest.PEM(root.Cert), testCourt); err == nil {
			t.Errorf("pinned a root with a directoryName constraint (critical %v)", critical)
		}
	}
	// What Go does evaluate still works, and still binds.
	f := newFixture(t)
	dns := func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"court.example"} }
	checkOutcome(t, f, f.signedUnder(t, f.warrant(), dns, nil), "")
	checkOutcome(t, f, f.signedUnder(t, f.warrant(), dns, func(c *x509.Certificate) { c.DNSNames = []string{"judge.elsewhere.example"} }), ReasonUntrustedChain)
	// An rfc822Name constraint Go would not apply to a subject e-mail address.
	email := func(c *x509.Certificate) { c.PermittedEmailAddresses = []string{"court.example"} }
	subjectEmail := func(c *x509.Certificate) {
		c.Subject.ExtraNames = append(c.Subject.ExtraNames, pkix.AttributeTypeAndValue{Type: oidEmailAddress, Value: "judge@elsewhere.example"})
	}
	checkOutcome(t, f, f.signedUnder(t, f.warrant(), email, subjectEmail), ReasonNameConstraints)
}

// TestInvariantWarrantCourtIsItsRootsCourt: the court a warrant names must
// be the court its signers' root is pinned for, for every signer.
func TestInvariantWarrantCourtIsItsRootsCourt(t *testing.T) {
	f := newFixture(t)
	other := f.otherCourt(t, "Supreme Court of Elsewhere")
	w := f.warrant()
	checkOutcome(t, f, f.sign(t, f.content(t, w), f.signer()), "")
	w.Court = "Supreme Court of Elsewhere"
	checkOutcome(t, f, f.sign(t, f.content(t, w), f.signer()), ReasonCourtMismatch)
	checkOutcome(t, f, f.sign(t, f.content(t, w), other), "")
	w.Court = testCourt
	checkOutcome(t, f, f.sign(t, f.content(t, w), other), ReasonCourtMismatch)
	checkOutcome(t, f, f.sign(t, f.content(t, w), f.signer(), other), ReasonCourtMismatch)
}

// TestInvariantReplayKeyNamespacedByRoot: two courts' warrants with the
// same serial have different replay keys; the same root's serial has one,
// whoever signs and whenever.
func TestInvariantReplayKeyNamespacedByRoot(t *testing.T) {
	f := newFixture(t)
	other := f.otherCourt(t, "Supreme Court of Elsewhere")
	w := f.warrant()
	a, err := f.verifier().Verify(f.sign(t, f.content(t, w), f.signer()))
	if err != nil {
		t.Fatal(err)
	}
	a2, err := f.verifier().Verify(f.sign(t, f.content(t, w), f.signer2()))
	if err != nil {
		t.Fatal(err)
	}
	w.Court = "Supreme Court of Elsewhere"
	b, err := f.verifier().Verify(f.sign(t, f.content(t, w), other))
	if err != nil {
		t.Fatal(err)
	}
	if a.Replay.String() != a2.Replay.String() {
		t.Errorf("one root's serial has two replay keys: %s, %s", a.Replay, a2.Replay)
	}
	if a.Replay.String() == b.Replay.String() || a.Replay.Serial != b.Replay.Serial {
		t.Errorf("two courts' serial %s share the replay key %s", a.Replay.Serial, a.Replay)
	}
	if a.Replay.Root != trust.RootKeyID(f.root.Cert) || a.Replay.Court != testCourt {
		t.Errorf("replay key %s does not name the root and its court", a.Replay)
	}
}
