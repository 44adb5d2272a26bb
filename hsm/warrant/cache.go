package warrant

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/internal/bytecache"
)

// What a verifier learns from bytes alone is kept between warrants: a court
// sends the same judge and CA certificates with every warrant, and parsing
// them and building their chains again is most of what a warrant costs
// beyond its own signature. Each cache is bounded (package bytecache) and
// keyed by every input of the result it holds. Nothing that depends on the
// clock beyond the certificates' own validity, on a CRL or on revocation
// is kept: those checks run for every warrant.
var (
	parsedCerts = bytecache.New[*x509.Certificate](256)
	identities  = bytecache.New[Identity](256)
	builtChains = bytecache.New[*chainResult](256)
)

// parseCertificate is x509.ParseCertificate, once per distinct DER.
func parseCertificate(der []byte) (*x509.Certificate, error) {
	if c, ok := parsedCerts.Get(string(der)); ok {
		return c, nil
	}
	// A copy: the certificate's fields point into what it was parsed
	// from, and the cache must keep neither the submitted warrant around
	// it nor bytes its caller may reuse.
	c, err := x509.ParseCertificate(bytes.Clone(der))
	if err == nil {
		parsedCerts.Add(string(der), c)
	}
	return c, err
}

// identityOf is the signer as the certificate names it, built once per
// certificate, with the signing time of this signature.
func identityOf(s signature) Identity {
	id, ok := identities.Get(string(s.cert.Raw))
	if !ok {
		id = certIdentity(s.cert)
		identities.Add(string(s.cert.Raw), id)
	}
	id.SigningTime = s.signingTime
	return id
}

// A chainResult is what x509 path building returned for a certificate, and
// the span of time over which it holds: path building depends on the clock
// only through the validity periods of the certificates it may use, so the
// result stands while no NotBefore or NotAfter of those falls between the
// time it was built and now.
type chainResult struct {
	chains   [][]*x509.Certificate
	from, to time.Time // [from, to)
}

// chainKey names one path-building question: the roots (by their digest),
// the certificate, the warrant's certificates offered as intermediates, and
// the required policies.
func chainKey(store *trust.Store, c *x509.Certificate, offered []*x509.Certificate, policyOIDs []string) string {
	h := sha256.New()
	roots := store.RootsDigest()
	h.Write(roots[:])
	field := func(b []byte) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
		h.Write(b)
	}
	field(c.Raw)
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(offered))))
	for _, o := range offered {
		field(o.Raw)
	}
	for _, o := range policyOIDs {
		field([]byte(o))
	}
	return string(h.Sum(nil))
}

// stableSpan is the longest span around now in which none of certs changes
// between valid and not valid: x509 takes a certificate as valid from
// NotBefore through NotAfter, both included.
func stableSpan(certs []*x509.Certificate, now time.Time) (from, to time.Time) {
	from, to = time.Time{}, time.Unix(1<<40, 0) // year 1 to beyond any NotAfter
	edge := func(t time.Time) {
		if now.Before(t) {
			if t.Before(to) {
				to = t
			}
		} else if t.After(from) {
			from = t
		}
	}
	for _, c := range certs {
		edge(c.NotBefore)
		edge(c.NotAfter.Add(time.Nanosecond))
	}
	return from, to
}

// cachedChains returns the chains built for key if they still hold at now.
func cachedChains(key string, now time.Time) ([][]*x509.Certificate, bool) {
	r, ok := builtChains.Get(key)
	if !ok || now.Before(r.from) || !now.Before(r.to) {
		return nil, false
	}
	return r.chains, true
}
