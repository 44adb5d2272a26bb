package warrant

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// Attribute types of a person's name: id-at-commonName, id-at-givenName,
// id-at-surname.
const (
	oidCommonName = "2.5.4.3"
	oidGivenName  = "2.5.4.42"
	oidSurname    = "2.5.4.4"
)

// sameSigner reports whether two signer certificates may belong to one
// person, so that they count once toward the approval policy. They do if
// the keys are the same, or if a person name of one is a person name of
// the other (personNames), compared without regard to case, compatibility
// forms (NFKC) or runs of white space, and whatever string type encodes
// them: one judge whose second certificate adds, drops or changes any
// other attribute (a unit, an organisation, an e-mail address) is still
// one judge (docs/warrant.md, "Distinct signers").
//
// When in doubt they are the same: a warrant a second person must approve
// is refused (duplicate_signer) rather than approved by one.
func sameSigner(a, b *x509.Certificate) bool {
	if bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo) {
		return true
	}
	nb := personNames(b)
	return slices.ContainsFunc(personNames(a), func(n string) bool { return slices.Contains(nb, n) })
}

// personName is the name a certificate gives its holder, as shown: its
// common name or, in a profile that names people by given name and
// surname and has no common name, those (given names first). "" when the
// certificate names no person; such a signer is refused (no_signer_name).
func personName(c *x509.Certificate) string {
	if strings.TrimSpace(c.Subject.CommonName) != "" {
		return c.Subject.CommonName
	}
	return strings.Join(slices.Concat(attributes(c, oidGivenName), attributes(c, oidSurname)), " ")
}

// personNames are the names compared for distinct signers, folded: each
// common name, or, without one, the given names and surnames as one name.
func personNames(c *x509.Certificate) []string {
	var out []string
	for _, n := range attributes(c, oidCommonName) {
		out = append(out, foldName(n))
	}
	if len(out) == 0 {
		if n := foldName(personName(c)); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// attributes are the subject's non-blank values of one attribute type, in
// the order of the subject.
func attributes(c *x509.Certificate, oid string) []string {
	var out []string
	for _, atv := range c.Subject.Names {
		if v := fmt.Sprint(atv.Value); atv.Type.String() == oid && strings.TrimSpace(v) != "" {
			out = append(out, v)
		}
	}
	return out
}

// foldName maps a name to the form names are compared in: compatibility
// forms folded (NFKC: "ﬁ" is "fi", a full-width "Ａ" is "A"), case folded,
// NFKC again (folding can undo it), and white space trimmed with every run
// of it one space. Look-alike letters of other scripts stay distinct: see
// docs/threat-model.md.
func foldName(s string) string {
	s = norm.NFKC.String(cases.Fold().String(norm.NFKC.String(s)))
	return strings.Join(strings.Fields(s), " ")
}
