package pivtest

import (
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/asn1"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// DocumentSigning is id-kp-documentSigning (RFC 9336), the extended key
// usage of a judge's signing certificate.
var DocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}

// Key kinds a judge's card can hold.
const (
	ECDSAP256 = "ecdsa-p256"
	RSA2048   = "rsa-2048"
)

// NewJudgeCard makes a key of kind on a new card with pin, and has ca
// certify it for the judge name: digitalSignature and nonRepudiation key
// usage, id-kp-documentSigning as the only extended key usage.
func NewJudgeCard(tb testing.TB, ca *trusttest.CA, name, kind, pin string, now time.Time) *Card {
	tb.Helper()
	var key crypto.Signer
	switch kind {
	case ECDSAP256:
		key = trusttest.ECKey(tb, elliptic.P256())
	case RSA2048:
		key = trusttest.RSAKey(tb, 2048)
	default:
		tb.Fatalf("pivtest: no key kind %q", kind)
	}
	cert := ca.Judge(tb, name, key.Public(), now, func(c *x509.Certificate) {
		c.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
		c.ExtKeyUsage = nil
		c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{DocumentSigning}
	})
	card, err := New(key, cert, pin)
	if err != nil {
		tb.Fatal(err)
	}
	return card
}
