package warrant

import (
	"crypto/elliptic"
	"crypto/x509"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// TestInvariantCachedChainsKeepEveryCheck: once a warrant's chain is built
// and kept, the same warrant is still refused when its judge is revoked,
// when its issuer's CRL goes stale, when a certificate of the chain
// expires, and under a trust store without its root.
func TestInvariantCachedChainsKeepEveryCheck(t *testing.T) {
	f := newFixture(t)
	inter := f.root.Intermediate(t, "Test Court Issuing CA", testNow, func(c *x509.Certificate) {
		c.NotAfter = testNow.Add(3 * time.Hour)
	})
	interCRL := func(revoked ...*x509.Certificate) []byte {
		return append(trusttest.CRLPEM(inter.CRL(t, testNow.Add(-time.Hour+time.Duration(len(revoked))*time.Minute),
			testNow.Add(time.Hour), revoked...)), trusttest.PEM(inter.Cert)...)
	}
	f.setCRL(t, interCRL())
	key := trusttest.ECKey(t, elliptic.P256())
	judge := inter.Judge(t, "Judge Via Intermediate", key.Public(), testNow)
	p7s := f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{judge, inter.Cert}})

	at := func(now time.Time) *Verifier {
		v := f.verifier()
		v.Now = func() time.Time { return now }
		return v
	}
	for range 2 { // the second run answers from the cache
		if _, err := at(testNow).Verify(p7s); err != nil {
			t.Fatal(err)
		}
	}
	if builtChains.Len() == 0 {
		t.Fatal("a verified chain was not kept")
	}

	refused := func(name string, v *Verifier, want Reason) {
		t.Helper()
		if _, err := v.Verify(p7s); ReasonOf(err) != want {
			t.Fatalf("%s: got %v (reason %q), want reason %q", name, err, ReasonOf(err), want)
		}
	}
	// The intermediate's CRL is fresh until +1h; the intermediate expires
	// at +3h.
	refused("stale CRL", at(testNow.Add(2*time.Hour)), ReasonCRLStale)
	refused("intermediate expired", at(testNow.Add(4*time.Hour)), ReasonCertExpired)
	// A store without the court's root.
	other := at(testNow)
	other.Trust = trust.New()
	if _, err := other.Trust.AddRoot(trusttest.PEM(trusttest.NewRoot(t, "Another Root", testNow).Cert), "Another Court"); err != nil {
		t.Fatal(err)
	}
	refused("root not pinned", other, ReasonUntrustedChain)
	// The judge revoked by a newer CRL.
	f.setCRL(t, interCRL(judge))
	refused("judge revoked", at(testNow), ReasonRevoked)
}

// TestInvariantCachedChainsFollowCertificateValidity: a chain kept while a
// certificate it could use was not yet valid is not used once that
// certificate becomes valid; path building runs again.
func TestInvariantCachedChainsFollowCertificateValidity(t *testing.T) {
	now := testNow
	c := &x509.Certificate{NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)}
	d := &x509.Certificate{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(2 * time.Hour)}
	from, to := stableSpan([]*x509.Certificate{c, d}, now)
	if !from.Equal(d.NotBefore) || !to.Equal(c.NotBefore) {
		t.Fatalf("span %v to %v, want %v to %v", from, to, d.NotBefore, c.NotBefore)
	}
	from, to = stableSpan([]*x509.Certificate{c, d}, now.Add(90*time.Minute))
	if !from.Equal(c.NotBefore) || !to.Equal(d.NotAfter.Add(time.Nanosecond)) {
		t.Fatalf("span %v to %v, want %v to just after %v", from, to, c.NotBefore, d.NotAfter)
	}
	builtChains.Add("k", &chainResult{from: now.Add(-time.Hour), to: now.Add(time.Hour)})
	if _, ok := cachedChains("k", now.Add(time.Hour)); ok {
		t.Fatal("a kept chain was used at the end of its span")
	}
	if _, ok := cachedChains("k", now); !ok {
		t.Fatal("a kept chain was not used within its span")
	}
}
