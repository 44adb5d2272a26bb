package warrant

import (
	"crypto/elliptic"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// TestInvariantSignerChainsToOneCourt: a signer whose certificate chains
// to the roots of two courts is refused (court_mismatch), whichever court
// the warrant names: else a judge of one court could sign as the other,
// using up its serials. Two ways there: a store that pinned a court's CA
// and the root that issued it (custodian trust add-root refuses that now,
// trust.TestInvariantPinnedRootsAreApart), and a court CA pinned apart
// from the root above it, reached through an intermediate the warrant
// carries.
func TestInvariantSignerChainsToOneCourt(t *testing.T) {
	const courtB = "District Court of Elsewhere"
	t.Run("a pinned root issued another", func(t *testing.T) {
		f := newFixture(t)
		caB := f.root.Intermediate(t, courtB+" CA", testNow)
		dir := filepath.Join(t.TempDir(), "trust")
		trusttest.PinUnchecked(t, dir, f.root.Cert, testCourt)
		trusttest.PinUnchecked(t, dir, caB.Cert, courtB)
		s, err := trust.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		f.store = s
		f.setCRL(t, f.root.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour)))
		f.setCRL(t, caB.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour)))
		checkCrossCourt(t, f, caB, nil)
	})
	t.Run("through an intermediate the warrant carries", func(t *testing.T) {
		f := newFixture(t)
		bridge := f.root.Intermediate(t, "Test Court Bridge CA", testNow)
		f.setCRL(t, append(trusttest.CRLPEM(bridge.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour))), trusttest.PEM(bridge.Cert)...))
		caB := bridge.Intermediate(t, courtB+" CA", testNow)
		if _, err := f.store.AddRoot(trusttest.PEM(caB.Cert), courtB); err != nil {
			t.Fatal(err)
		}
		f.setCRL(t, caB.CRL(t, testNow.Add(-time.Hour), testNow.Add(7*24*time.Hour)))
		checkCrossCourt(t, f, caB, bridge.Cert)
	})
}

// checkCrossCourt signs as a judge under caB, pinned for its own court
// and issued (through bridge, if not nil) by the fixture's root: with the
// judge's certificate alone it chains to one court and verifies; with the
// chain up to the fixture's root it is refused for either court.
func checkCrossCourt(t *testing.T, f *fixture, caB *trusttest.CA, bridge *x509.Certificate) {
	t.Helper()
	courtB := f.store.CourtOf(caB.Cert)
	key := trusttest.ECKey(t, elliptic.P256())
	judge := caB.Judge(t, "Judge Bea of Elsewhere", key.Public(), testNow)
	w := f.warrant()
	w.Court = courtB
	checkOutcome(t, f, f.sign(t, f.content(t, w), Signer{Key: key, Chain: []*x509.Certificate{judge}}), "")
	up := []*x509.Certificate{judge, caB.Cert}
	if bridge != nil {
		up = append(up, bridge)
	}
	for _, court := range []string{testCourt, courtB} {
		w.Court = court
		v, err := f.verifier().Verify(f.sign(t, f.content(t, w), Signer{Key: key, Chain: up}))
		if ReasonOf(err) != ReasonCourtMismatch || !strings.Contains(err.Error(), "roots of several courts") {
			t.Errorf("warrant for %q by a judge chaining to two courts: %v (verified: %v)", court, err, v != nil)
		}
	}
	// The fixture's own judge is unaffected.
	checkOutcome(t, f, f.sign(t, f.content(t, f.warrant()), f.signer()), "")
}
