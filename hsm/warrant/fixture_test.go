package warrant

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"github.com/github/smimesign/ietf-cms/oid"
	"github.com/github/smimesign/ietf-cms/protocol"
)

// testCourt is the court the fixture's root is pinned for.
const testCourt = "District Court of Testing"

// testNow is the appliance clock in these tests.
var testNow = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// fixture is one court PKI with a fresh CRL and two judges.
type fixture struct {
	root      *trusttest.CA
	judgeKey  *ecdsa.PrivateKey
	judge     *x509.Certificate
	judge2Key *ecdsa.PrivateKey
	judge2    *x509.Certificate
	store     *trust.Store
	recipient string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{root: trusttest.NewRoot(t, "Test Court Root", testNow)}
	f.judgeKey = trusttest.ECKey(t, elliptic.P256())
	f.judge = f.root.Judge(t, "Judge Ada Lovelace", f.judgeKey.Public(), testNow)
	f.judge2Key = trusttest.ECKey(t, elliptic.P384())
	f.judge2 = f.root.Judge(t, "Clerk Grace Hopper", f.judge2Key.Public(), testNow)
	f.store = trust.New()
	if _, err := f.store.AddRoot(trusttest.PEM(f.root.Cert), testCourt); err != nil {
		t.Fatal(err)
	}
	f.setCRL(t, f.root.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour)))
	id, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	f.recipient = id.Public().String()
	return f
}

func (f *fixture) setCRL(t testing.TB, der []byte) {
	t.Helper()
	if _, err := f.store.SetCRL(der, testNow); err != nil {
		t.Fatal(err)
	}
}

// warrant returns a valid warrant document addressed to "cust-1" for key ID
// "2026-11", in force from an hour ago for a week.
func (f *fixture) warrant() *Warrant {
	return &Warrant{
		Version: 1, Serial: "W-2026-0042", Docket: "CR-17/2026", Court: testCourt,
		Agency: "Test Police", Official: "Inspector Morse", Offence: "fraud",
		Targets:   []string{"alice@example.org", "+15550100"},
		NotBefore: testNow.Add(-time.Hour).Format(time.RFC3339),
		NotAfter:  testNow.Add(7 * 24 * time.Hour).Format(time.RFC3339),
		KeyIDs:    []string{"2026-11"}, Custodians: []string{"cust-1", "cust-2"},
		Recipient: f.recipient,
	}
}

func (f *fixture) content(t testing.TB, w *Warrant) []byte {
	t.Helper()
	b, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *fixture) signer() Signer {
	return Signer{Key: f.judgeKey, Chain: []*x509.Certificate{f.judge}}
}

func (f *fixture) signer2() Signer {
	return Signer{Key: f.judge2Key, Chain: []*x509.Certificate{f.judge2}}
}

// sign signs content at testNow-10m.
func (f *fixture) sign(t testing.TB, content []byte, signers ...Signer) []byte {
	t.Helper()
	p7s, err := Sign(content, signers, testNow.Add(-10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return p7s
}

func (f *fixture) verifier() *Verifier {
	return &Verifier{
		Trust: f.store, CustodianID: "cust-1", HeldKeyIDs: []string{"2026-11", "2026-12"},
		Now: func() time.Time { return testNow },
	}
}

// tweak changes how buildSigned makes one SignerInfo, to make the
// malformed signatures no honest signer produces.
type tweak struct {
	hash        crypto.Hash
	signingTime time.Time
	attrs       func(protocol.Attributes) protocol.Attributes
	noAttrs     bool
	unsigned    bool
	sigID       *pkix.AlgorithmIdentifier
	noCerts     bool
}

// buildSigned makes SignedData by hand, one SignerInfo per signer.
func buildSigned(t testing.TB, content []byte, signers []Signer, tw tweak) []byte {
	t.Helper()
	eci, err := protocol.NewDataEncapsulatedContentInfo(content)
	if err != nil {
		t.Fatal(err)
	}
	sd, err := protocol.NewSignedData(eci)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range signers {
		if !tw.noCerts {
			for _, c := range s.Chain {
				_ = sd.AddCertificate(c) // duplicates are fine to skip
			}
		}
		sd.SignerInfos = append(sd.SignerInfos, buildSignerInfo(t, content, s, tw))
		sd.DigestAlgorithms = append(sd.DigestAlgorithms, sd.SignerInfos[len(sd.SignerInfos)-1].DigestAlgorithm)
	}
	der, err := sd.ContentInfoDER()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func buildSignerInfo(t testing.TB, content []byte, s Signer, tw tweak) protocol.SignerInfo {
	t.Helper()
	hash := tw.hash
	if hash == 0 {
		hash = crypto.SHA256
	}
	st := tw.signingTime
	if st.IsZero() {
		st = testNow.Add(-10 * time.Minute)
	}
	attrs, err := signedAttributes(content, hash, st)
	if err != nil {
		t.Fatal(err)
	}
	if tw.attrs != nil {
		attrs = tw.attrs(attrs)
	}
	toSign := content
	if tw.noAttrs {
		attrs = nil
	} else if toSign, err = attrs.MarshaledForSigning(); err != nil {
		t.Fatal(err)
	}
	h := hash.New()
	h.Write(toSign)
	sig, err := s.Key.Sign(rand.Reader, h.Sum(nil), hash)
	if err != nil {
		t.Fatal(err)
	}
	sigID := pkix.AlgorithmIdentifier{Algorithm: oid.X509PublicKeyAndDigestAlgorithmToSignatureAlgorithm[s.Chain[0].PublicKeyAlgorithm][oid.CryptoHashToDigestAlgorithm[hash].String()]}
	if _, ok := s.Key.Public().(*rsa.PublicKey); ok {
		sigID = pkix.AlgorithmIdentifier{Algorithm: oid.PublicKeyAlgorithmRSA, Parameters: asn1.NullRawValue}
	}
	if tw.sigID != nil {
		sigID = *tw.sigID
	}
	sid, err := protocol.NewIssuerAndSerialNumber(s.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	si := protocol.SignerInfo{
		Version: 1, SID: sid, DigestAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oid.CryptoHashToDigestAlgorithm[hash]},
		SignedAttrs: attrs, SignatureAlgorithm: sigID, Signature: sig,
	}
	if tw.unsigned {
		a, _ := protocol.NewAttribute(asn1.ObjectIdentifier{1, 2, 3, 4}, "unsigned")
		si.UnsignedAttrs = protocol.Attributes{a}
	}
	return si
}

// replaceAttr swaps the value of one attribute type.
func replaceAttr(typ asn1.ObjectIdentifier, val any) func(protocol.Attributes) protocol.Attributes {
	return func(attrs protocol.Attributes) protocol.Attributes {
		var out protocol.Attributes
		for _, a := range attrs {
			if !a.Type.Equal(typ) {
				out = append(out, a)
			}
		}
		if val != nil {
			a, err := protocol.NewAttribute(typ, val)
			if err != nil {
				panic(err)
			}
			out = append(out, a)
		}
		return out
	}
}

// oidTestPolicy is the certificate policy requirePolicy asks for.
const oidTestPolicy = "1.3.6.1.4.1.99999.1.1"

// withPolicy makes a certificate assert oidTestPolicy.
func withPolicy(c *x509.Certificate) {
	o, err := x509.ParseOID(oidTestPolicy)
	if err != nil {
		panic(err)
	}
	c.Policies = append(c.Policies, o)
}

// requirePolicy sets a policy that requires oidTestPolicy.
func (f *fixture) requirePolicy(t testing.TB) {
	t.Helper()
	if err := f.store.SetPolicy(trust.Policy{Signers: 1, PolicyOIDs: []string{oidTestPolicy}, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
}

// signedUnder signs w by a judge under a new intermediate CA of the
// fixture's root, whose CRL is stored; interEdit and judgeEdit change the
// two certificates (nil: unchanged).
func (f *fixture) signedUnder(t testing.TB, w *Warrant, interEdit, judgeEdit func(*x509.Certificate)) []byte {
	t.Helper()
	s := f.underIntermediate(t, interEdit, judgeEdit)
	return f.sign(t, f.content(t, w), s)
}

func (f *fixture) underIntermediate(t testing.TB, interEdit, judgeEdit func(*x509.Certificate)) Signer {
	t.Helper()
	var ie, je []func(*x509.Certificate)
	if interEdit != nil {
		ie = append(ie, interEdit)
	}
	if judgeEdit != nil {
		je = append(je, judgeEdit)
	}
	inter := f.root.Intermediate(t, "Test Court Issuing CA", testNow, ie...)
	f.setCRL(t, append(trusttest.CRLPEM(inter.CRL(t, testNow.Add(-time.Hour), testNow.Add(time.Hour))), trusttest.PEM(inter.Cert)...))
	key := trusttest.ECKey(t, elliptic.P256())
	cert := inter.Judge(t, "Judge Via Intermediate", key.Public(), testNow, je...)
	return Signer{Key: key, Chain: []*x509.Certificate{cert, inter.Cert}}
}

// otherCourt pins a second court's root, with a fresh CRL, and returns a
// judge of that court.
func (f *fixture) otherCourt(t testing.TB, court string) Signer {
	t.Helper()
	root := trusttest.NewRoot(t, court+" Root", testNow)
	if _, err := f.store.AddRoot(trusttest.PEM(root.Cert), court); err != nil {
		t.Fatal(err)
	}
	f.setCRL(t, root.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour)))
	key := trusttest.ECKey(t, elliptic.P256())
	return Signer{Key: key, Chain: []*x509.Certificate{root.Judge(t, "Judge of "+court, key.Public(), testNow)}}
}
