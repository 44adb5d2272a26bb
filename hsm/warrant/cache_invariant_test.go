package warrant

import (
	"bytes"
	"fmt"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/trust/trusttest"
	"testing"
)

// TestInvariantCertificateCacheOwnsItsBytes: a caller may reuse the buffer
// it passed to Verify once Verify has returned (nothing documents that the
// warrant's bytes are kept). The kept certificates must not share that
// memory: otherwise the next warrant of the same judge meets a cached
// certificate whose Raw, RawTBSCertificate and Signature are whatever the
// caller wrote since, and the whole submitted warrant stays pinned in
// memory for as long as one of its certificates is cached.
func TestInvariantCertificateCacheOwnsItsBytes(t *testing.T) {
	f := newFixture(t)
	first := f.sign(t, f.content(t, f.warrant()), f.signer())
	buf := bytes.Clone(first)
	if _, err := f.verifier().Verify(buf); err != nil {
		t.Fatal(err)
	}
	// The caller reads its next input into the same buffer.
	for i := range buf {
		buf[i] = 0
	}
	if c, ok := parsedCerts.Get(string(f.judge.Raw)); ok && !bytes.Equal(c.Raw, f.judge.Raw) {
		t.Errorf("the cached judge certificate changed with the caller's buffer (it aliases the submitted warrant, %d bytes kept for a %d-byte certificate)", cap(c.Raw), len(c.Raw))
	}
	w := f.warrant()
	w.Serial = "W-2026-0043"
	second := f.sign(t, f.content(t, w), f.signer())
	if _, err := f.verifier().Verify(second); err != nil {
		t.Fatalf("a later warrant of the same judge is refused after the first caller reused its buffer: %v", err)
	}
}

// TestInvariantConcurrentVerificationsShareCachesSafely: two warrants of
// different judges verified at once, many times, each keep their own
// signer and verdict (run with -race).
func TestInvariantConcurrentVerificationsShareCachesSafely(t *testing.T) {
	f := newFixture(t)
	one := f.sign(t, f.content(t, f.warrant()), f.signer())
	w := f.warrant()
	w.Serial = "W-2026-0044"
	two := f.sign(t, f.content(t, w), f.signer2())
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			p7s, name := one, "Judge Ada Lovelace"
			if g%2 == 1 {
				p7s, name = two, "Clerk Grace Hopper"
			}
			for range 20 {
				v, err := f.verifier().Verify(p7s)
				if err != nil {
					done <- err
					return
				}
				if len(v.Signers) != 1 || v.Signers[0].Name != name {
					done <- fmt.Errorf("warrant of %s verified as signed by %+v", name, v.Signers)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestInvariantCachedChainsFollowPolicyAndCourtChanges: a warrant whose
// chain is kept is refused once the store requires a certificate policy
// its judge lacks, once the policy asks for more signers, and under a
// store that pins the same root for another court.
func TestInvariantCachedChainsFollowPolicyAndCourtChanges(t *testing.T) {
	f := newFixture(t)
	p7s := f.sign(t, f.content(t, f.warrant()), f.signer())
	for range 2 {
		if _, err := f.verifier().Verify(p7s); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(name string, v *Verifier, want Reason) {
		t.Helper()
		if _, err := v.Verify(p7s); ReasonOf(err) != want {
			t.Errorf("%s: got %v (reason %q), want reason %q", name, err, ReasonOf(err), want)
		}
	}
	f.requirePolicy(t)
	refused("policy OID now required", f.verifier(), ReasonMissingPolicy)
	if err := f.store.SetPolicy(trust.Policy{Signers: 2, EKUs: trust.DefaultEKUs()}); err != nil {
		t.Fatal(err)
	}
	refused("two signers now required", f.verifier(), ReasonTooFewSigners)

	rebound := trust.New()
	if _, err := rebound.AddRoot(trusttest.PEM(f.root.Cert), "Another Court"); err != nil {
		t.Fatal(err)
	}
	if _, err := rebound.SetCRL(f.root.CRL(t, testNow.Add(-time.Hour), testNow.Add(24*time.Hour)), testNow); err != nil {
		t.Fatal(err)
	}
	v := f.verifier()
	v.Trust = rebound
	refused("root pinned for another court", v, ReasonCourtMismatch)
}

// TestInvariantCachedChainsFollowIntermediateRevocation: a warrant whose
// chain through an intermediate is kept is refused once the root's CRL
// revokes that intermediate.
func TestInvariantCachedChainsFollowIntermediateRevocation(t *testing.T) {
	f := newFixture(t)
	s := f.underIntermediate(t, nil, nil)
	p7s := f.sign(t, f.content(t, f.warrant()), s)
	for range 2 {
		if _, err := f.verifier().Verify(p7s); err != nil {
			t.Fatal(err)
		}
	}
	f.setCRL(t, f.root.CRL(t, testNow.Add(-30*time.Minute), testNow.Add(24*time.Hour), s.Chain[1]))
	if _, err := f.verifier().Verify(p7s); ReasonOf(err) != ReasonRevoked {
		t.Fatalf("intermediate revoked after its chain was kept: got %v (reason %q), want %q", err, ReasonOf(err), ReasonRevoked)
	}
}
