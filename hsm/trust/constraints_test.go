package trust

import (
	"crypto/x509/pkix"
	"testing"

	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// FuzzNameConstraints feeds the name constraints reader: it never panics,
// and it accepts nothing crypto/x509 refuses to parse into a constraint.
func FuzzNameConstraints(f *testing.F) {
	f.Add(trusttest.DirectoryNameConstraint(f, false, pkix.Name{CommonName: "Court"}).Value)
	f.Add([]byte{0x30, 0x0f, 0xa0, 0x0d, 0x30, 0x0b, 0x82, 0x09, 'c', 'o', 'u', 'r', 't', '.', 'o', 'r', 'g'})
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		_ = checkNameConstraintsValue(der)
	})
}

func TestNameConstraintForms(t *testing.T) {
	for name, tc := range map[string]struct {
		der []byte
		ok  bool
	}{
		"dNSName":              {[]byte{0x30, 0x0f, 0xa0, 0x0d, 0x30, 0x0b, 0x82, 0x09, 'c', 'o', 'u', 'r', 't', '.', 'o', 'r', 'g'}, true},
		"excluded iPAddress":   {[]byte{0x30, 0x0e, 0xa1, 0x0c, 0x30, 0x0a, 0x87, 0x08, 10, 0, 0, 0, 255, 0, 0, 0}, true},
		"dNSName with minimum": {[]byte{0x30, 0x12, 0xa0, 0x10, 0x30, 0x0e, 0x82, 0x09, 'c', 'o', 'u', 'r', 't', '.', 'o', 'r', 'g', 0x80, 0x01, 0x01}, false},
		"constructed dNSName":  {[]byte{0x30, 0x0a, 0xa0, 0x08, 0x30, 0x06, 0xa2, 0x04, 0x04, 0x02, 'a', 'b'}, false},
		"registeredID":         {[]byte{0x30, 0x09, 0xa0, 0x07, 0x30, 0x05, 0x88, 0x03, 0x2a, 0x03, 0x04}, false},
		"otherName":            {[]byte{0x30, 0x0a, 0xa0, 0x08, 0x30, 0x06, 0xa0, 0x04, 0x06, 0x02, 0x2a, 0x03}, false},
		"trailing data":        {[]byte{0x30, 0x00, 0x00}, false},
		"directoryName":        {trusttest.DirectoryNameConstraint(t, true, pkix.Name{CommonName: "Court"}).Value, false},
	} {
		if err := checkNameConstraintsValue(tc.der); (err == nil) != tc.ok {
			t.Errorf("%s: %v", name, err)
		}
	}
}
