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

// oidCommonName is id-at-commonName.
const oidCommonName = "2.5.4.3"

// sameSigner reports whether two signer certificates may belong to one
// person, so that they count once toward the approval policy. They do if
// any of these holds (docs/warrant.md, "Distinct signers"):
//   - the keys are the same;
//   - the subjects are the same name as RFC 5280 (7.1) compares names:
//     attribute types and values, whatever string type encodes a value,
//     without regard to case, compatibility forms (NFKC) or runs of white
//     space; attribute order is ignored too, which only counts more names
//     as the same;
//   - a common name of one is a common name of the other, compared the
//     same way: one judge whose second certificate adds or drops an
//     attribute (a unit, an e-mail address) is still one judge.
//
// When in doubt they are the same: a warrant a second person must approve
// is refused (duplicate_signer) rather than approved by one.
func sameSigner(a, b *x509.Certificate) bool {
	if bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo) || bytes.Equal(a.RawSubject, b.RawSubject) {
		return true
	}
	na, nb := nameKey(a), nameKey(b)
	if slices.Equal(na, nb) {
		return true
	}
	ca, cb := commonNames(a), commonNames(b)
	return slices.ContainsFunc(ca, func(n string) bool { return slices.Contains(cb, n) })
}

// nameKey is the subject as a sorted list of "type=value" with each value
// folded (foldName).
func nameKey(c *x509.Certificate) []string {
	out := make([]string, 0, len(c.Subject.Names))
	for _, atv := range c.Subject.Names {
		out = append(out, atv.Type.String()+"="+foldName(fmt.Sprint(atv.Value)))
	}
	slices.Sort(out)
	return out
}

// commonNames are the subject's common names, folded.
func commonNames(c *x509.Certificate) []string {
	var out []string
	for _, atv := range c.Subject.Names {
		if atv.Type.String() == oidCommonName {
			if v := foldName(fmt.Sprint(atv.Value)); v != "" {
				out = append(out, v)
			}
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
