package warrant

import (
	"bytes"
	"crypto"
	"crypto/elliptic"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/github/smimesign/ietf-cms/oid"
	"github.com/github/smimesign/ietf-cms/protocol"
)

func TestVerifyAccepts(t *testing.T) {
	f := newFixture(t)
	rsaKey := trusttest.RSAKey(t, 2048)
	rsaCert := f.root.Judge(t, "Judge RSA", rsaKey.Public(), testNow)
	cases := map[string][]Signer{
		"ecdsa p-256":    {f.signer()},
		"ecdsa p-384":    {f.signer2()},
		"rsa pkcs1 v1.5": {{Key: rsaKey, Chain: []*x509.Certificate{rsaCert}}},
		"rsa pss":        {{Key: rsaKey, Chain: []*x509.Certificate{rsaCert}, PSS: true}},
		"two signers":    {f.signer(), f.signer2()},
	}
	for name, signers := range cases {
		t.Run(name, func(t *testing.T) {
			w := f.warrant()
			content := f.content(t, w)
			got, err := f.verifier().Verify(f.sign(t, content, signers...))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Content, content) || got.Digest != Digest(content) {
				t.Error("content or digest differs from what was signed")
			}
			if got.Replay != (ReplayKey{Root: trust.RootKeyID(f.root.Cert), Court: w.Court, Serial: w.Serial}) {
				t.Errorf("replay key %v", got.Replay)
			}
			if len(got.Signers) != len(signers) || got.Signers[0].Name != signers[0].Chain[0].Subject.CommonName {
				t.Errorf("signers %+v", got.Signers)
			}
		})
	}
}

// TestVerifyDoubleLock: under a two-signer policy a warrant verifies with
// two distinct judges, and names both; one judge, the same judge twice
// (one card or two), or two judges under a three-signer policy are
// refused for the count.
func TestVerifyDoubleLock(t *testing.T) {
	f := newFixture(t)
	if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
	content := f.content(t, f.warrant())
	v, err := f.verifier().Verify(f.sign(t, content, f.signer(), f.signer2()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, id := range v.Signers {
		names = append(names, id.Name)
	}
	want := []string{f.judge.Subject.CommonName, f.judge2.Subject.CommonName}
	if !slices.Equal(names, want) || want[0] == want[1] || v.Signers[0].Fingerprint == v.Signers[1].Fingerprint {
		t.Fatalf("verified with signers %+v, want the two distinct judges %q", v.Signers, want)
	}
	secondCardKey := trusttest.ECKey(t, elliptic.P256())
	secondCard := Signer{Key: secondCardKey, Chain: []*x509.Certificate{f.root.Judge(t, f.judge.Subject.CommonName, secondCardKey.Public(), testNow)}}
	for name, c := range map[string]struct {
		p7s  []byte
		want Reason
	}{
		"one judge":                {f.sign(t, content, f.signer()), ReasonTooFewSigners},
		"the same signature twice": {buildSigned(t, content, []Signer{f.signer(), f.signer()}, tweak{}), ReasonDuplicateSigner},
		"one judge with two cards": {f.sign(t, content, f.signer(), secondCard), ReasonDuplicateSigner},
		"the second judge alone":   {f.sign(t, content, f.signer2()), ReasonTooFewSigners},
	} {
		if _, err := f.verifier().Verify(c.p7s); ReasonOf(err) != c.want {
			t.Errorf("%s: got %v, want %s", name, err, c.want)
		}
	}
	if err := f.store.SetPolicy(trust.Policy{Signers: 3, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier().Verify(f.sign(t, content, f.signer(), f.signer2())); ReasonOf(err) != ReasonTooFewSigners {
		t.Errorf("two judges under a three-signer policy: got %v, want %s", err, ReasonTooFewSigners)
	}
}

func TestVerifyIntermediate(t *testing.T) {
	f := newFixture(t)
	inter := f.root.Intermediate(t, "Test Court Issuing CA", testNow)
	key := trusttest.ECKey(t, elliptic.P256())
	cert := inter.Judge(t, "Judge Via Intermediate", key.Public(), testNow)
	p7s := f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{cert, inter.Cert}})
	if _, err := f.verifier().Verify(p7s); ReasonOf(err) != ReasonCRLMissing {
		t.Fatalf("without the intermediate's CRL: got %v, want %s", err, ReasonCRLMissing)
	}
	crl := append(trusttest.CRLPEM(inter.CRL(t, testNow.Add(-time.Hour), testNow.Add(time.Hour))), trusttest.PEM(inter.Cert)...)
	f.setCRL(t, crl)
	if _, err := f.verifier().Verify(p7s); err != nil {
		t.Fatal(err)
	}
}

// refusal is one entry of the bad-input catalogue: a way to make a
// warrant, the setup around it, and the reason it must be refused for.
type refusal struct {
	want  Reason
	setup func(t *testing.T, f *fixture, v *Verifier) []byte
}

// catalogue lists every way a warrant must fail. Each case changes one
// thing from a valid warrant.
func catalogue() map[string]refusal {
	signed := func(edit func(*Warrant)) func(*testing.T, *fixture, *Verifier) []byte {
		return func(t *testing.T, f *fixture, _ *Verifier) []byte {
			w := f.warrant()
			edit(w)
			return f.sign(t, mustJSON(t, w), f.signer())
		}
	}
	signedRaw := func(doc func(f *fixture) string) func(*testing.T, *fixture, *Verifier) []byte {
		return func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return f.sign(t, []byte(doc(f)), f.signer())
		}
	}
	judgeWith := func(edit func(*x509.Certificate)) func(*testing.T, *fixture, *Verifier) []byte {
		return func(t *testing.T, f *fixture, _ *Verifier) []byte {
			key := trusttest.ECKey(t, elliptic.P256())
			cert := f.root.Judge(t, "Judge Edited", key.Public(), testNow, edit)
			return buildSigned(t, f.content(t, f.warrant()), []Signer{{Key: key, Chain: []*x509.Certificate{cert}}}, tweak{})
		}
	}
	tweaked := func(tw tweak) func(*testing.T, *fixture, *Verifier) []byte {
		return func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return buildSigned(t, f.content(t, f.warrant()), []Signer{f.signer()}, tw)
		}
	}
	return map[string]refusal{
		// The court PKI.
		"signer cert expired": {ReasonCertExpired, judgeWith(func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = testNow.Add(-48*time.Hour), testNow.Add(-time.Minute)
		})},
		"signer cert not yet valid":             {ReasonCertNotYetValid, judgeWith(func(c *x509.Certificate) { c.NotBefore = testNow.Add(time.Hour) })},
		"signer cert not valid at signing time": {ReasonCertAtSigning, judgeWith(func(c *x509.Certificate) { c.NotBefore = testNow.Add(-5 * time.Minute) })},
		"wrong key usage":                       {ReasonKeyUsage, judgeWith(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment })},
		"no key usage extension":                {ReasonKeyUsage, judgeWith(func(c *x509.Certificate) { c.KeyUsage = 0 })},
		"revoked": {ReasonRevoked, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			f.setCRL(t, f.root.CRL(t, testNow.Add(-30*time.Minute), testNow.Add(time.Hour), f.judge))
			return f.sign(t, f.content(t, f.warrant()), f.signer())
		}},
		"stale crl": {ReasonCRLStale, func(t *testing.T, f *fixture, v *Verifier) []byte {
			v.Now = func() time.Time { return testNow.Add(8 * 24 * time.Hour) }
			w := f.warrant()
			w.NotAfter = testNow.Add(9 * 24 * time.Hour).Format(time.RFC3339)
			return f.sign(t, mustJSON(t, w), f.signer())
		}},
		"missing crl": {ReasonCRLMissing, func(t *testing.T, f *fixture, v *Verifier) []byte {
			v.Trust = trust.New()
			if _, err := v.Trust.AddRoot(trusttest.PEM(f.root.Cert), testCourt); err != nil {
				t.Fatal(err)
			}
			return f.sign(t, f.content(t, f.warrant()), f.signer())
		}},
		"crl signed by the wrong ca": {ReasonCRLMissing, func(t *testing.T, f *fixture, v *Verifier) []byte {
			v.Trust = trust.New()
			if _, err := v.Trust.AddRoot(trusttest.PEM(f.root.Cert), testCourt); err != nil {
				t.Fatal(err)
			}
			// An impostor CA with the root's name signs a CRL: refused at set-crl.
			impostor := trusttest.NewRoot(t, f.root.Cert.Subject.CommonName, testNow)
			if _, err := v.Trust.SetCRL(impostor.CRL(t, testNow.Add(-time.Hour), testNow.Add(time.Hour)), testNow); err == nil {
				t.Fatal("stored a CRL signed by the wrong CA")
			}
			return f.sign(t, f.content(t, f.warrant()), f.signer())
		}},
		"other root": {ReasonUntrustedChain, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			other := trusttest.NewRoot(t, "Other Court Root", testNow)
			key := trusttest.ECKey(t, elliptic.P256())
			cert := other.Judge(t, "Judge Elsewhere", key.Public(), testNow)
			return f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{cert, other.Cert}})
		}},
		"self-signed judge": {ReasonUntrustedChain, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			key := trusttest.ECKey(t, elliptic.P256())
			cert := trusttest.SelfSigned(t, f.judge.Subject.CommonName, key, testNow)
			return f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{cert}})
		}},
		"empty trust store": {ReasonNoTrustRoots, func(t *testing.T, f *fixture, v *Verifier) []byte {
			v.Trust = trust.New()
			return f.sign(t, f.content(t, f.warrant()), f.signer())
		}},
		"required policy oid missing": {ReasonMissingPolicy, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			if err := f.store.SetPolicy(trust.Policy{Signers: 1, PolicyOIDs: []string{"1.3.6.1.4.1.99999.1"}, EKUs: trust.DefaultEKUs()}); err != nil {
				t.Fatal(err)
			}
			return f.sign(t, f.content(t, f.warrant()), f.signer())
		}},
		"required eku missing": {ReasonExtKeyUsage, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			if err := f.store.SetPolicy(trust.Policy{Signers: 1, EKUs: []string{"1.3.6.1.4.1.99999.2"}}); err != nil {
				t.Fatal(err)
			}
			return f.sign(t, f.content(t, f.warrant()), f.signer())
		}},
		"tls server certificate signs": {ReasonExtKeyUsage, judgeWith(func(c *x509.Certificate) {
			c.ExtKeyUsage, c.UnknownExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil
		})},
		"intermediate allows only tls": {ReasonExtKeyUsage, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return f.signedUnder(t, f.warrant(), func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }, nil)
		}},
		"required policy missing at an intermediate": {ReasonMissingPolicy, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			f.requirePolicy(t)
			return f.signedUnder(t, f.warrant(), nil, withPolicy)
		}},
		"directoryName constraint on an intermediate": {ReasonNameConstraints, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return f.signedUnder(t, f.warrant(), func(c *x509.Certificate) {
				c.ExtraExtensions = append(c.ExtraExtensions, trusttest.DirectoryNameConstraint(t, false, c.Subject))
			}, nil)
		}},
		"another court's name": {ReasonCourtMismatch, signed(func(w *Warrant) { w.Court = "Supreme Court of Elsewhere" })},
		"signers of two courts": {ReasonCourtMismatch, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
				t.Fatal(err)
			}
			other := f.otherCourt(t, "Supreme Court of Elsewhere")
			return f.sign(t, f.content(t, f.warrant()), f.signer(), other)
		}},
		"signed in the future": {ReasonSignedInFuture, tweaked(tweak{signingTime: testNow.Add(time.Hour)})},
		"signed by a ca key": {ReasonSignerIsCA, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			key := trusttest.ECKey(t, elliptic.P256())
			cert := f.root.Judge(t, "Sub CA", key.Public(), testNow, func(c *x509.Certificate) {
				c.IsCA, c.BasicConstraintsValid = true, true
				c.KeyUsage |= x509.KeyUsageCertSign
			})
			return f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{cert}})
		}},
		"signer certificate names no person": {ReasonNoSignerName, judgeWith(func(c *x509.Certificate) {
			c.Subject = pkix.Name{Organization: []string{"Test Courts"}, OrganizationalUnit: []string{"Criminal Division"}, SerialNumber: "J-17"}
		})},
		"signed by the root itself": {ReasonSignerIsCA, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return buildSigned(t, f.content(t, f.warrant()), []Signer{{Key: f.root.Key, Chain: []*x509.Certificate{f.root.Cert}}}, tweak{})
		}},

		// The approval policy.
		"same signer twice under a 2-signer policy": {ReasonDuplicateSigner, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
				t.Fatal(err)
			}
			return buildSigned(t, f.content(t, f.warrant()), []Signer{f.signer(), f.signer()}, tweak{})
		}},
		"same judge with a second card": {ReasonDuplicateSigner, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
				t.Fatal(err)
			}
			key := trusttest.ECKey(t, elliptic.P256())
			cert := f.root.Judge(t, f.judge.Subject.CommonName, key.Public(), testNow)
			return f.sign(t, f.content(t, f.warrant()), f.signer(), Signer{Key: key, Chain: []*x509.Certificate{cert}})
		}},
		"one signer under a 2-signer policy": {ReasonTooFewSigners, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
				t.Fatal(err)
			}
			return f.sign(t, f.content(t, f.warrant()), f.signer())
		}},

		// The CMS envelope.
		"content tampered after signing": {ReasonDigestMismatch, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			w := f.warrant()
			content := f.content(t, w)
			p7s := f.sign(t, content, f.signer())
			return bytes.Replace(p7s, []byte("fraud"), []byte("theft"), 1)
		}},
		"signature from another key": {ReasonBadSignature, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return buildSigned(t, f.content(t, f.warrant()), []Signer{{Key: f.judge2Key, Chain: []*x509.Certificate{f.judge, f.judge2}}}, tweak{sigID: &pkix.AlgorithmIdentifier{Algorithm: oid.SignatureAlgorithmECDSAWithSHA256}})
		}},
		"missing signed attributes":    {ReasonNoSignedAttributes, tweaked(tweak{noAttrs: true})},
		"unsigned attributes":          {ReasonUnsignedAttributes, tweaked(tweak{unsigned: true})},
		"missing signing time":         {ReasonNoSigningTime, tweaked(tweak{attrs: replaceAttr(oid.AttributeSigningTime, nil)})},
		"missing message digest":       {ReasonBadSignedAttributes, tweaked(tweak{attrs: replaceAttr(oid.AttributeMessageDigest, nil)})},
		"content-type attribute lies":  {ReasonContentTypeMismatch, tweaked(tweak{attrs: replaceAttr(oid.AttributeContentType, oid.ContentTypeSignedData)})},
		"duplicate signed attribute":   {ReasonBadSignedAttributes, tweaked(tweak{attrs: func(a protocol.Attributes) protocol.Attributes { return append(a, a[0]) }})},
		"sha-1 digest":                 {ReasonBadAlgorithm, tweaked(tweak{hash: crypto.SHA1})},
		"signature algorithm mismatch": {ReasonBadAlgorithm, tweaked(tweak{sigID: &pkix.AlgorithmIdentifier{Algorithm: oid.SignatureAlgorithmECDSAWithSHA384}})},
		"rsa-1024 signer": {ReasonWeakKey, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			key := trusttest.RSAKey(t, 1024)
			cert := f.root.Judge(t, "Judge Weak", key.Public(), testNow)
			return buildSigned(t, f.content(t, f.warrant()), []Signer{{Key: key, Chain: []*x509.Certificate{cert}}}, tweak{})
		}},
		"p-521 signer": {ReasonBadAlgorithm, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			key := trusttest.ECKey(t, elliptic.P521())
			cert := f.root.Judge(t, "Judge P521", key.Public(), testNow)
			return buildSigned(t, f.content(t, f.warrant()), []Signer{{Key: key, Chain: []*x509.Certificate{cert}}}, tweak{hash: crypto.SHA512})
		}},
		"signer certificate left out": {ReasonSignerCertMissing, tweaked(tweak{noCerts: true})},
		"nine signatures": {ReasonTooManySigners, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			signers := make([]Signer, maxSigners+1)
			for i := range signers {
				signers[i] = f.signer()
			}
			return buildSigned(t, f.content(t, f.warrant()), signers, tweak{})
		}},
		"no signers": {ReasonNoSigners, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return buildSigned(t, f.content(t, f.warrant()), nil, tweak{})
		}},
		"detached content": {ReasonDetached, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return rebuild(t, f.sign(t, f.content(t, f.warrant()), f.signer()), func(sd *protocol.SignedData) {
				sd.EncapContentInfo.EContent = asn1.RawValue{}
			})
		}},
		"wrong encapsulated content type": {ReasonWrongContentType, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return rebuild(t, f.sign(t, f.content(t, f.warrant()), f.signer()), func(sd *protocol.SignedData) {
				sd.EncapContentInfo.EContentType = oid.ContentTypeTSTInfo
			})
		}},
		"not signed data": {ReasonNotSignedData, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			der, _ := asn1.Marshal(protocol.ContentInfo{ContentType: oid.ContentTypeData, Content: asn1.RawValue{Class: 2, Tag: 0, IsCompound: true, Bytes: []byte{4, 1, 'x'}}})
			return der
		}},
		"truncated der": {ReasonMalformedCMS, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			p7s := f.sign(t, f.content(t, f.warrant()), f.signer())
			return p7s[:len(p7s)-10]
		}},
		"trailing bytes after der": {ReasonMalformedCMS, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return append(f.sign(t, f.content(t, f.warrant()), f.signer()), 0)
		}},
		"ber indefinite length": {ReasonNotDER, func(t *testing.T, f *fixture, _ *Verifier) []byte {
			return toIndefinite(t, f.sign(t, f.content(t, f.warrant()), f.signer()))
		}},
		"not asn.1 at all": {ReasonMalformedCMS, func(*testing.T, *fixture, *Verifier) []byte { return []byte(`{"version":1}`) }},
		"oversize cms":     {ReasonTooLarge, func(*testing.T, *fixture, *Verifier) []byte { return make([]byte, maxCMS+1) }},

		// The warrant document.
		"window closed":       {ReasonExpired, signed(func(w *Warrant) { w.NotAfter = testNow.Add(-time.Minute).Format(time.RFC3339) })},
		"window not yet open": {ReasonNotYetValid, signed(func(w *Warrant) { w.NotBefore = testNow.Add(time.Minute).Format(time.RFC3339) })},
		"not addressed to us": {ReasonNotAddressed, signed(func(w *Warrant) { w.Custodians = []string{"cust-7"} })},
		"unknown key id":      {ReasonUnknownKeyID, signed(func(w *Warrant) { w.KeyIDs = []string{"2026-11", "2027-01"} })},
		"window too long":     {ReasonWindowTooLong, signed(func(w *Warrant) { w.NotAfter = testNow.Add(40 * 24 * time.Hour).Format(time.RFC3339) })},
		"window reversed":     {ReasonBadWindow, signed(func(w *Warrant) { w.NotAfter = w.NotBefore })},
		"time not rfc 3339":   {ReasonBadTime, signed(func(w *Warrant) { w.NotBefore = "20 Nov 2026" })},
		"version 2":           {ReasonBadVersion, signed(func(w *Warrant) { w.Version = 2 })},
		"empty docket":        {ReasonMissingField, signed(func(w *Warrant) { w.Docket = "" })},
		"no targets":          {ReasonMissingField, signed(func(w *Warrant) { w.Targets = nil })},
		"duplicate target":    {ReasonDuplicateEntry, signed(func(w *Warrant) { w.Targets = []string{"a", "a"} })},
		"terminal escape":     {ReasonBadText, signed(func(w *Warrant) { w.Offence = "fraud\x1b[2J" })},
		"bidi override":       {ReasonBadText, signed(func(w *Warrant) { w.Agency = "Police\u202e" })},
		"bad custodian id":    {ReasonBadField, signed(func(w *Warrant) { w.Custodians = []string{"cust 1"} })},
		"bad recipient":       {ReasonBadRecipient, signed(func(w *Warrant) { w.Recipient = "age1notours" })},
		"unknown field":       {ReasonUnknownField, signedRaw(func(f *fixture) string { return addField(f, `"judge":"me"`) })},
		"duplicate key":       {ReasonDuplicateKey, signedRaw(func(f *fixture) string { return addField(f, `"serial":"W-2"`) })},
		"trailing data":       {ReasonTrailingData, signedRaw(func(f *fixture) string { return addTrailing(f, `{}`) })},
		"wrong type":          {ReasonBadField, signedRaw(func(f *fixture) string { return strings.Replace(addField(f, ""), `"version":1`, `"version":"1"`, 1) })},
		"json array":          {ReasonMalformedJSON, signedRaw(func(*fixture) string { return `[1,2]` })},
		"truncated json":      {ReasonMalformedJSON, signedRaw(func(f *fixture) string { s := addField(f, ""); return s[:len(s)-3] })},
		"oversize warrant":    {ReasonTooLarge, signedRaw(func(f *fixture) string { return addField(f, `"x":"`+strings.Repeat("a", MaxSize)+`"`) })},

		// Its envelopes.
		"envelope of a key id not named": {ReasonBadEnvelope, signed(func(w *Warrant) {
			w.Envelopes = []EnvelopeRef{{KeyID: "2026-12", Target: "alice@example.org", Enc: testEnc(1)}}
		})},
		"envelope of a target not named": {ReasonBadEnvelope, signed(func(w *Warrant) {
			w.Envelopes = []EnvelopeRef{{KeyID: "2026-11", Target: "bob@example.org", Enc: testEnc(1)}}
		})},
		"envelope enc off the curve": {ReasonBadEnvelope, signed(func(w *Warrant) {
			enc := testEnc(1)
			enc[64] ^= 1
			w.Envelopes = []EnvelopeRef{{KeyID: "2026-11", Target: "alice@example.org", Enc: enc}}
		})},
		"envelope enc compressed": {ReasonBadEnvelope, signed(func(w *Warrant) {
			enc := testEnc(1)
			w.Envelopes = []EnvelopeRef{{KeyID: "2026-11", Target: "alice@example.org", Enc: append([]byte{2 + enc[64]&1}, enc[1:33]...)}}
		})},
		"envelope enc not base64": {ReasonBadEnvelope, signedRaw(func(f *fixture) string {
			return addField(f, `"envelopes":[{"key_id":"2026-11","target":"alice@example.org","enc":"not base64!"}]`)
		})},
		"envelope listed twice": {ReasonDuplicateEntry, signed(func(w *Warrant) {
			e := EnvelopeRef{KeyID: "2026-11", Target: "alice@example.org", Enc: testEnc(1)}
			w.Envelopes = []EnvelopeRef{e, {KeyID: "2026-11", Target: "+15550100", Enc: testEnc(2)}, e}
		})},
		"too many envelopes":    {ReasonBadField, signed(func(w *Warrant) { w.Envelopes = testEnvelopes(maxEnvelopes + 1) })},
		"empty envelopes array": {ReasonMissingField, signedRaw(func(f *fixture) string { return addField(f, `"envelopes":[]`) })},
	}
}

func TestInvariantWarrantRefusalCatalogue(t *testing.T) {
	cases := catalogue()
	if len(cases) < 30 {
		t.Fatalf("catalogue has %d cases, want at least 30", len(cases))
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			v := f.verifier()
			p7s := c.setup(t, f, v)
			got, err := v.Verify(p7s)
			if err == nil {
				t.Fatalf("verified: %+v", got.Warrant)
			}
			if ReasonOf(err) != c.want {
				t.Fatalf("got %v (reason %q), want reason %q", err, ReasonOf(err), c.want)
			}
			if !errors.Is(err, &Error{Reason: c.want}) {
				t.Fatal("errors.Is does not match the reason")
			}
		})
	}
}

// TestSignerInfoSwapped moves a SignerInfo from one warrant into another:
// the signed message digest no longer matches the content.
func TestSignerInfoSwapped(t *testing.T) {
	f := newFixture(t)
	a := f.sign(t, f.content(t, f.warrant()), f.signer())
	w := f.warrant()
	w.Serial = "W-OTHER"
	b := f.sign(t, f.content(t, w), f.signer())
	swapped := rebuild(t, a, func(sd *protocol.SignedData) {
		ci, _ := protocol.ParseContentInfo(b)
		other, _ := ci.SignedDataContent()
		sd.SignerInfos = other.SignerInfos
	})
	if _, err := f.verifier().Verify(swapped); ReasonOf(err) != ReasonDigestMismatch {
		t.Fatalf("got %v, want %s", err, ReasonDigestMismatch)
	}
}

func TestInvariantEmptyIdentityVerifiesNothing(t *testing.T) {
	f := newFixture(t)
	p7s := f.sign(t, f.content(t, f.warrant()), f.signer())
	v := f.verifier()
	v.CustodianID = ""
	if _, err := v.Verify(p7s); ReasonOf(err) != ReasonNoCustodianID {
		t.Fatalf("got %v", err)
	}
	v = f.verifier()
	v.HeldKeyIDs = nil
	if _, err := v.Verify(p7s); ReasonOf(err) != ReasonNoHeldKeys {
		t.Fatalf("got %v", err)
	}
}

func mustJSON(t *testing.T, w *Warrant) []byte {
	t.Helper()
	// Marshal checks the fields; bad warrants are encoded without it.
	b, err := jsonMarshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func addField(f *fixture, field string) string {
	b, _ := jsonMarshal(f.warrant())
	s := strings.TrimSuffix(string(b), "\n")
	if field == "" {
		return s
	}
	return s[:len(s)-1] + "," + field + "}"
}

func addTrailing(f *fixture, tail string) string { return addField(f, "") + tail }

// rebuild decodes a signed warrant, edits it and encodes it again.
func rebuild(t *testing.T, p7s []byte, edit func(*protocol.SignedData)) []byte {
	t.Helper()
	ci, err := protocol.ParseContentInfo(p7s)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := ci.SignedDataContent()
	if err != nil {
		t.Fatal(err)
	}
	edit(sd)
	der, err := sd.ContentInfoDER()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// toIndefinite re-encodes the outer ContentInfo SEQUENCE with an
// indefinite length: valid BER, not DER.
func toIndefinite(t *testing.T, der []byte) []byte {
	t.Helper()
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(der, &raw); err != nil {
		t.Fatal(err)
	}
	out := append([]byte{0x30, 0x80}, raw.Bytes...)
	return append(out, 0, 0)
}

func TestCoSign(t *testing.T) {
	f := newFixture(t)
	if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
	one := f.sign(t, f.content(t, f.warrant()), f.signer())
	if _, err := f.verifier().Verify(one); ReasonOf(err) != ReasonTooFewSigners {
		t.Fatalf("one signature: got %v", err)
	}
	two, err := CoSign(one, []Signer{f.signer2()}, testNow.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	got, err := f.verifier().Verify(two)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Signers) != 2 {
		t.Fatalf("%d signers", len(got.Signers))
	}
	tampered := bytes.Replace(one, []byte("fraud"), []byte("theft"), 1)
	if _, err := CoSign(tampered, []Signer{f.signer2()}, testNow); ReasonOf(err) != ReasonDigestMismatch {
		t.Fatalf("co-signed a tampered warrant: %v", err)
	}
}

// TestEveryReasonTested keeps the catalogue complete: each reason is made
// by a catalogue case or by a test named here.
func TestEveryReasonTested(t *testing.T) {
	// Reasons the catalogue cannot make (they need another verifier), each
	// with the test of this package that makes it. The test must exist and
	// name the reason; it checks the reason itself.
	elsewhere := map[Reason]string{
		ReasonNoCustodianID:  "TestInvariantEmptyIdentityVerifiesNothing",
		ReasonNoHeldKeys:     "TestInvariantEmptyIdentityVerifiesNothing",
		ReasonListMalformed:  "TestEnvelopeListRefusals",
		ReasonListTruncated:  "TestEnvelopeListRefusals",
		ReasonListTooLarge:   "TestEnvelopeListRefusals",
		ReasonListDuplicate:  "TestEnvelopeListRefusals",
		ReasonListMismatch:   "TestWarrantChecksItsList",
		ReasonListKeyID:      "TestWarrantChecksItsList",
		ReasonListTarget:     "TestWarrantChecksItsList",
		ReasonListMissing:    "TestWarrantChecksItsList",
		ReasonListUnexpected: "TestWarrantChecksItsList",
	}
	// Backstops: checks that trust.Store keeps unreachable, each with the
	// check that the store refuses to hold such a state.
	backstops := map[Reason]func(t *testing.T){
		ReasonNoApprovalPolicy: func(t *testing.T) {
			f := newFixture(t)
			for _, p := range []trust.Policy{{Signers: 0, EKUs: trust.DefaultEKUs()},
				{Signers: 1, EKUs: trust.DefaultEKUs(), PolicyOIDs: []string{"1.02.3"}}} {
				if err := f.store.SetPolicy(p); err == nil {
					t.Errorf("the trust store holds policy %+v", p)
				}
			}
		},
	}
	tests, constants := testFunctions(t)
	covered := make(map[Reason]bool)
	for _, c := range catalogue() {
		covered[c.want] = true
	}
	seen := make(map[Reason]bool)
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("reason %q listed twice", r)
		}
		seen[r] = true
		switch name, ok := elsewhere[r]; {
		case covered[r]:
		case ok:
			if c := constants[r]; c == "" || !slices.Contains(tests[name], c) {
				t.Errorf("reason %q: %s does not exist or never names the reason's constant %q", r, name, c)
			}
		case backstops[r] != nil:
			t.Run(string(r), backstops[r])
		default:
			t.Errorf("no test makes reason %q", r)
		}
	}
}

// testFunctions maps each Test function of this package's test files to
// the identifiers its body uses, and each declared Reason's value to the
// name of its constant.
func testFunctions(t *testing.T) (tests map[string][]string, constants map[Reason]string) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("source files: %v", err)
	}
	tests, constants = make(map[string][]string), make(map[Reason]string)
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				test := n.Name.Name
				if n.Recv == nil && strings.HasPrefix(test, "Test") && n.Body != nil && strings.HasSuffix(name, "_test.go") {
					ast.Inspect(n.Body, func(n ast.Node) bool {
						if id, ok := n.(*ast.Ident); ok {
							tests[test] = append(tests[test], id.Name)
						}
						return true
					})
				}
				return false
			case *ast.ValueSpec:
				if typ, ok := n.Type.(*ast.Ident); ok && typ.Name == "Reason" && len(n.Names) == len(n.Values) {
					for i, v := range n.Values {
						if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
							value, _ := strconv.Unquote(lit.Value)
							constants[Reason(value)] = n.Names[i].Name
						}
					}
				}
			}
			return true
		})
	}
	return tests, constants
}
