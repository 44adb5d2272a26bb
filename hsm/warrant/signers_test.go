package warrant

import (
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// utf8Subject encodes CN=cn, O=org with UTF8String values, where Go (and
// the fixture's first judge) writes PrintableString: the same name (RFC
// 5280, 7.1) in other bytes.
func utf8Subject(t *testing.T, cn, org string) []byte {
	t.Helper()
	type atv struct {
		Type  asn1.ObjectIdentifier
		Value string `asn1:"utf8"`
	}
	type rdnSET []atv // the SET suffix makes encoding/asn1 write a SET
	raw, err := asn1.Marshal([]rdnSET{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: cn}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: org}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestInvariantDistinctSignersAreDistinctNames: under a two-signer policy,
// a second certificate of the same judge (a new card: new key) does not
// count as a second signer when its subject is the same name in another
// string encoding, in other letter case, spacing or compatibility forms,
// or the same common name with an attribute more. Two different judges do.
func TestInvariantDistinctSignersAreDistinctNames(t *testing.T) {
	f := newFixture(t)
	if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
	cn := f.judge.Subject.CommonName
	for name, edit := range map[string]func(*x509.Certificate){
		"UTF8String instead of PrintableString": func(c *x509.Certificate) { c.RawSubject = utf8Subject(t, cn, "Test Courts") },
		"other letter case":                     func(c *x509.Certificate) { c.Subject.CommonName = strings.ToUpper(cn) },
		"other spacing":                         func(c *x509.Certificate) { c.Subject.CommonName = strings.ReplaceAll(cn, " ", "  ") + " " },
		"full-width letters":                    func(c *x509.Certificate) { c.Subject.CommonName = strings.Replace(cn, "A", "\uff21", 1) },
		"an extra attribute":                    func(c *x509.Certificate) { c.Subject.OrganizationalUnit = []string{"Renewed 2026"} },
		"another organisation":                  func(c *x509.Certificate) { c.Subject.Organization = []string{"Other Courts"} },
		"names in another order": func(c *x509.Certificate) {
			c.Subject = pkix.Name{}
			c.RawSubject = reorderedSubject(t, cn, "Test Courts")
		},
	} {
		t.Run(name, func(t *testing.T) {
			key := trusttest.ECKey(t, elliptic.P256())
			cert := f.root.Judge(t, cn, key.Public(), testNow, edit)
			p7s := f.sign(t, f.content(t, f.warrant()), f.signer(), Signer{Key: key, Chain: []*x509.Certificate{cert}})
			if _, err := f.verifier().Verify(p7s); ReasonOf(err) != ReasonDuplicateSigner {
				t.Fatalf("one judge (%s and %s) met a 2-signer policy: %v", f.judge.Subject, cert.Subject, err)
			}
		})
	}
	// The control: two people.
	v, err := f.verifier().Verify(f.sign(t, f.content(t, f.warrant()), f.signer(), f.signer2()))
	if err != nil {
		t.Fatalf("two distinct judges refused: %v", err)
	}
	if len(v.Signers) != 2 {
		t.Fatalf("%d signers", len(v.Signers))
	}
}

// reorderedSubject is CN=cn first, then O=org: the fixture judge's
// attributes in the other order (Go writes O before CN).
func reorderedSubject(t *testing.T, cn, org string) []byte {
	t.Helper()
	raw, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: cn}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: org}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestInvariantDisplayShowsEachSignerWithIssuer: the officer's display
// names every signer with the CA that issued its certificate.
func TestInvariantDisplayShowsEachSignerWithIssuer(t *testing.T) {
	f := newFixture(t)
	if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
	second := f.underIntermediate(t, nil, nil)
	v, err := f.verifier().Verify(f.sign(t, f.content(t, f.warrant()), f.signer(), second))
	if err != nil {
		t.Fatal(err)
	}
	s := unwrapped(Summary(v.Warrant, v.Signers))
	for _, want := range []string{
		"Signed by:  " + f.judge.Subject.CommonName + " (issued by " + f.root.Cert.Subject.String() + ")",
		"Signed by:  Judge Via Intermediate (issued by " + second.Chain[1].Subject.String() + ")",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("display lacks %q:\n%s", want, s)
		}
	}
}

// givenSurname names a person as profiles without a common name do:
// givenName and surname, with a unit.
func givenSurname(given, surname, unit string) func(*x509.Certificate) {
	return func(c *x509.Certificate) {
		c.Subject = pkix.Name{Organization: []string{"Test Courts"}, OrganizationalUnit: []string{unit},
			ExtraNames: []pkix.AttributeTypeAndValue{
				{Type: asn1.ObjectIdentifier{2, 5, 4, 42}, Value: given},
				{Type: asn1.ObjectIdentifier{2, 5, 4, 4}, Value: surname},
			}}
	}
}

// TestInvariantDistinctSignersAreDistinctPersonNames: a signer's person
// name is its common name, else its given name and surname. Under a
// two-signer policy, two cards of one judge named by given name and
// surname that differ in any other attribute (here the unit) count once,
// as does a card with the common name "Ada Lovelace" beside one with the
// given name Ada and surname Lovelace; two people named that way count
// twice, and the display shows each one's name, never a blank.
func TestInvariantDistinctSignersAreDistinctPersonNames(t *testing.T) {
	f := newFixture(t)
	if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
	card := func(edit func(*x509.Certificate)) Signer {
		key := trusttest.ECKey(t, elliptic.P256())
		return Signer{Key: key, Chain: []*x509.Certificate{f.root.Judge(t, "", key.Public(), testNow, edit)}}
	}
	withCN := func(cn string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.Subject = pkix.Name{CommonName: cn, Organization: []string{"Other Courts"}}
		}
	}
	for name, pair := range map[string][2]Signer{
		"two cards differing in the unit": {card(givenSurname("Ada", "Lovelace", "Criminal Division")), card(givenSurname("Ada", "Lovelace", "Appeals Division"))},
		"other case and spacing":          {card(givenSurname("Ada", "Lovelace", "Criminal Division")), card(givenSurname(" ADA", "lovelace ", "Criminal Division"))},
		"common name and given/surname":   {card(withCN("Ada  Lovelace")), card(givenSurname("Ada", "Lovelace", "Criminal Division"))},
	} {
		p7s := f.sign(t, f.content(t, f.warrant()), pair[0], pair[1])
		if _, err := f.verifier().Verify(p7s); ReasonOf(err) != ReasonDuplicateSigner {
			t.Errorf("%s: one judge (%s and %s) met a 2-signer policy: %v", name, pair[0].Chain[0].Subject, pair[1].Chain[0].Subject, err)
		}
	}
	// The control: two people named by given name and surname.
	v, err := f.verifier().Verify(f.sign(t, f.content(t, f.warrant()),
		card(givenSurname("Ada", "Lovelace", "Criminal Division")), card(givenSurname("Grace", "Hopper", "Criminal Division"))))
	if err != nil {
		t.Fatalf("two distinct judges refused: %v", err)
	}
	s := Summary(v.Warrant, v.Signers)
	for _, want := range []string{"Signed by:  Ada Lovelace (issued by ", "Signed by:  Grace Hopper (issued by "} {
		if !strings.Contains(s, want) {
			t.Errorf("display lacks %q:\n%s", want, s)
		}
	}
}
