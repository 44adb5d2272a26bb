package trust

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}

// GeneralName forms (RFC 5280, 4.2.1.6) by their context tag.
var generalNames = map[int]string{
	0: "otherName", 1: "rfc822Name", 2: "dNSName", 3: "x400Address", 4: "directoryName",
	5: "ediPartyName", 6: "uniformResourceIdentifier", 7: "iPAddress", 8: "registeredID",
}

// CheckNameConstraints refuses a certificate whose name constraints
// crypto/x509 would not evaluate, critical or not. Go checks rfc822Name,
// dNSName, uniformResourceIdentifier and iPAddress subtrees (primitive
// encodings) against subject alternative names. It ignores otherName,
// x400Address, directoryName, ediPartyName and registeredID subtrees (and
// any of the four in a constructed encoding) when the extension is not
// critical, and it ignores a subtree's minimum and maximum, which RFC 5280
// requires to be 0 and absent. A constraint meant to confine the CA that
// the verifier skips would confine nothing, so each of these fails closed.
func CheckNameConstraints(c *x509.Certificate) error {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidNameConstraints) {
			continue
		}
		if err := checkNameConstraintsValue(e.Value); err != nil {
			return fmt.Errorf("name constraints of %q: %w", c.Subject, err)
		}
	}
	return nil
}

func checkNameConstraintsValue(der []byte) error {
	in := cryptobyte.String(der)
	var nc cryptobyte.String
	if !in.ReadASN1(&nc, cbasn1.SEQUENCE) || !in.Empty() {
		return errors.New("the extension is malformed")
	}
	for _, tag := range []cbasn1.Tag{cbasn1.Tag(0).ContextSpecific().Constructed(), cbasn1.Tag(1).ContextSpecific().Constructed()} {
		var subtrees cryptobyte.String
		var present bool
		if !nc.ReadOptionalASN1(&subtrees, &present, tag) {
			return errors.New("the extension is malformed")
		}
		if err := checkSubtrees(subtrees); err != nil {
			return err
		}
	}
	if !nc.Empty() {
		return errors.New("the extension is malformed")
	}
	return nil
}

func checkSubtrees(subtrees cryptobyte.String) error {
	for !subtrees.Empty() {
		var subtree, base cryptobyte.String
		var tag cbasn1.Tag
		if !subtrees.ReadASN1(&subtree, cbasn1.SEQUENCE) || !subtree.ReadAnyASN1(&base, &tag) {
			return errors.New("the extension is malformed")
		}
		if !subtree.Empty() {
			return errors.New("a subtree has a minimum or maximum, which this verifier does not evaluate")
		}
		number := int(tag & 0x1f)
		name, known := generalNames[number]
		if tag&0xc0 != 0x80 || !known { // not context-specific, or a high tag number
			return errors.New("a subtree's base is not a GeneralName")
		}
		switch {
		case number == 1 || number == 2 || number == 6 || number == 7:
			if tag&0x20 != 0 {
				return fmt.Errorf("a %s subtree is in a constructed encoding, which this verifier does not evaluate", name)
			}
		default:
			return fmt.Errorf("a %s subtree cannot be evaluated by this verifier", name)
		}
	}
	return nil
}
