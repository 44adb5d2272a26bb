package warrant

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
)

// SigningSkew is how far a signing time may lie ahead of the appliance's
// clock: the judge's workstation and the appliance keep separate clocks.
const SigningSkew = 5 * time.Minute

var (
	oidExtKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidEmailAddress   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	oidAnyPolicy      = "2.5.29.32.0"
	oidAnyExtKeyUsage = trust.OIDAnyExtKeyUsage
)

// Verifier checks signed warrants for one appliance.
type Verifier struct {
	// Trust holds the pinned roots, CRLs and approval policy.
	Trust *trust.Store
	// CustodianID is this appliance's ID; the warrant must list it.
	CustodianID string
	// HeldKeyIDs are the key IDs this appliance holds a share of; every key
	// ID the warrant names must be among them.
	HeldKeyIDs []string
	// Now is the appliance clock; nil means time.Now.
	Now func() time.Time
	// MaxValidity caps not_after - not_before; 0 means DefaultMaxValidity.
	MaxValidity time.Duration
}

// Verified is a warrant that passed every check.
type Verified struct {
	Warrant *Warrant
	Content []byte   // the signed JSON bytes
	Digest  [32]byte // SHA-256 of Content
	Replay  ReplayKey
	Signers []Identity
}

// ReplayKey names a warrant for replay protection: the key of the court
// root its signers chain to (trust.RootKeyID), the court bound to that
// root, and the court's serial number as written in the signed document.
// The appliance refuses a key it has seen before, so re-signing a warrant
// does not make it usable twice, and a judge under one court's root cannot
// use up another court's serials: the root is part of the key, and a
// warrant's court must be its root's.
type ReplayKey struct {
	Root   string `json:"root"`
	Court  string `json:"court"`
	Serial string `json:"serial"`
}

// String is an unambiguous encoding of the key (JSON array of three
// strings): the bytes the ledger's replay index holds.
func (k ReplayKey) String() string {
	b, _ := json.Marshal([3]string{k.Root, k.Court, k.Serial})
	return string(b)
}

// CheckCourtName checks a court name as the warrant's court field is
// checked, for binding a court root to it (custodian trust add-root).
func CheckCourtName(name string) error { return checkText("court", name) }

// Identity is a signer as the court PKI vouches for it.
type Identity struct {
	Name        string    `json:"name"` // the judge's name: the certificate's common name, else given name and surname
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	Serial      string    `json:"serial"`      // hex
	Fingerprint string    `json:"fingerprint"` // SHA-256 of the certificate, hex
	SigningTime time.Time `json:"signing_time"`
	// Certificate is the signer's certificate as the warrant carries it,
	// for showing its fingerprints; it is not written out.
	Certificate *x509.Certificate `json:"-"`
}

// Verify runs every check: signatures, chains, revocation, approval policy,
// the validity window, that this custodian is addressed and that it holds
// every key ID named. Replay is left to the caller, which owns the ledger:
// it must refuse a Verified whose Replay key it has seen.
func (v *Verifier) Verify(p7s []byte) (*Verified, error) {
	if v.CustodianID == "" {
		return nil, refuse(ReasonNoCustodianID, "verifier has no custodian ID; configure the appliance's ID")
	}
	if len(v.HeldKeyIDs) == 0 {
		return nil, refuse(ReasonNoHeldKeys, "this appliance holds no key share; provision one first")
	}
	out, err := v.VerifySignatures(p7s)
	if err != nil {
		return nil, err
	}
	w := out.Warrant
	if !slices.Contains(w.Custodians, v.CustodianID) {
		return nil, refuse(ReasonNotAddressed, "warrant is not addressed to custodian %q", v.CustodianID)
	}
	for _, k := range w.KeyIDs {
		if !slices.Contains(v.HeldKeyIDs, k) {
			return nil, refuse(ReasonUnknownKeyID, "warrant names key ID %q, which this appliance does not hold", k)
		}
	}
	return out, nil
}

// VerifySignatures runs every check of Verify except the addressing ones
// (custodian and key IDs). It is for tools that look at a warrant away from
// an appliance; an appliance must call Verify.
func (v *Verifier) VerifySignatures(p7s []byte) (*Verified, error) {
	if v.Trust == nil || v.Trust.Empty() {
		return nil, refuse(ReasonNoTrustRoots, "the trust store has no court root; add one with custodian trust add-root")
	}
	policy := v.Trust.Policy()
	if policy.Signers < 1 {
		return nil, refuse(ReasonNoApprovalPolicy, "the approval policy asks for no signer")
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	m, err := parseMessage(p7s)
	if err != nil {
		return nil, err
	}
	w, err := Parse(m.content, v.MaxValidity)
	if err != nil {
		return nil, err
	}
	root, ids, err := v.checkSigners(m, w.Court, policy, now)
	if err != nil {
		return nil, err
	}
	if err := checkWindowNow(w, now); err != nil {
		return nil, err
	}
	replay := ReplayKey{Root: trust.RootKeyID(root), Court: w.Court, Serial: w.Serial}
	return &Verified{Warrant: w, Content: m.content, Digest: Digest(m.content), Replay: replay, Signers: ids}, nil
}

func checkWindowNow(w *Warrant, now time.Time) error {
	nb, na := w.Window()
	if now.Before(nb) {
		return refuse(ReasonNotYetValid, "warrant is not in force before %s", w.NotBefore)
	}
	if !now.Before(na) {
		return refuse(ReasonExpired, "warrant expired at %s", w.NotAfter)
	}
	return nil
}

// checkSigners checks each signature's certificate and that enough
// distinct people signed, all under the root of court. It returns that
// root.
func (v *Verifier) checkSigners(m *message, court string, policy trust.Policy, now time.Time) (*x509.Certificate, []Identity, error) {
	inter := x509.NewCertPool()
	for _, c := range m.certs {
		// A constraint Go would skip (or, marked critical, reject without
		// saying why) is refused here by name, whatever the chain.
		if err := trust.CheckNameConstraints(c); err != nil {
			return nil, nil, refuseErr(ReasonNameConstraints, err, "the warrant carries a certificate whose name constraints cannot be checked")
		}
		inter.AddCert(c)
	}
	var root *x509.Certificate
	var certs []*x509.Certificate
	for _, s := range m.signers {
		r, err := v.checkCertificate(s, offered{m.certs, inter}, court, policy, now)
		if err != nil {
			return nil, nil, err
		}
		// A court has one root key (package trust), so this holds whenever
		// each signer's root is the court's; it is checked again because
		// the replay key names one root.
		if root != nil && trust.RootKeyID(r) != trust.RootKeyID(root) {
			return nil, nil, refuse(ReasonCourtMismatch, "the signers of the warrant chain to different court roots; all must chain to the root of %q", court)
		}
		root = r
		// Two signatures count as two signers only if both the person
		// name and the key differ: a judge with two cards is one judge.
		if i := slices.IndexFunc(certs, func(c *x509.Certificate) bool { return sameSigner(c, s.cert) }); i >= 0 {
			return nil, nil, refuse(ReasonDuplicateSigner, "%s and %s may be the same person (same key, or the same name: common name, else given name "+
				"and surname, ignoring case, spacing and compatibility forms); the approval policy counts distinct signers",
				DisplayName(nameOrSubject(certs[i])), DisplayName(nameOrSubject(s.cert)))
		}
		certs = append(certs, s.cert)
	}
	if len(certs) < policy.Signers {
		return nil, nil, refuse(ReasonTooFewSigners, "warrant has %d distinct signer(s); the approval policy needs %d", len(certs), policy.Signers)
	}
	// Identities are built only for a warrant that passed.
	ids := make([]Identity, len(m.signers))
	for i, s := range m.signers {
		ids[i] = identityOf(s)
	}
	return root, ids, nil
}

// nameOrSubject is the signer's person name, or its whole subject when it
// names no person: a verified signer always has a name (no_signer_name),
// a warrant only inspected may not.
func nameOrSubject(c *x509.Certificate) string {
	if n := personName(c); n != "" {
		return n
	}
	return c.Subject.String()
}

// certIdentity is the signer a certificate names, without a signing time.
func certIdentity(c *x509.Certificate) Identity {
	sum := sha256.Sum256(c.Raw)
	return Identity{
		Name:        nameOrSubject(c),
		Subject:     c.Subject.String(),
		Issuer:      c.Issuer.String(),
		Serial:      c.SerialNumber.Text(16),
		Fingerprint: hex.EncodeToString(sum[:]),
		Certificate: c,
	}
}

// checkCertificate checks one signer's certificate: usage, a chain to the
// root of court valid now and at signing time, a signing purpose and the
// required certificate policies along it, name constraints the verifier
// can evaluate, and revocation of every certificate in the chain by a
// fresh CRL of its issuer. It returns the chain's root.
func (v *Verifier) checkCertificate(s signature, inter offered, court string, policy trust.Policy, now time.Time) (*x509.Certificate, error) {
	c := s.cert
	// A judge is a person, never a CA: a CA key signing warrants would sit
	// outside revocation (its own issuer's CRL aside) and above the judges.
	if c.BasicConstraintsValid && c.IsCA {
		return nil, refuse(ReasonSignerIsCA, "certificate of %q is a CA certificate; warrants are signed with a judge's certificate", personName(c))
	}
	if personName(c) == "" {
		return nil, refuse(ReasonNoSignerName, "certificate %q names no person (no common name, given name or surname); "+
			"the approval policy counts signers by name, so the court must name its judges in their certificates", c.Subject)
	}
	if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, refuse(ReasonKeyUsage, "certificate of %q is not for digital signatures (key usage)", personName(c))
	}
	if now.Before(c.NotBefore) {
		return nil, refuse(ReasonCertNotYetValid, "certificate of %q is not valid before %s", personName(c), c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return nil, refuse(ReasonCertExpired, "certificate of %q expired at %s", personName(c), c.NotAfter.UTC().Format(time.RFC3339))
	}
	if s.signingTime.After(now.Add(SigningSkew)) {
		return nil, refuse(ReasonSignedInFuture, "signing time %s is in the future; check the clocks", s.signingTime.UTC().Format(time.RFC3339))
	}
	chains, err := v.chains(c, inter, policy, now)
	if err != nil {
		return nil, err
	}
	if err := v.checkOneCourt(c, chains); err != nil {
		return nil, err
	}
	// Any chain that passes every check will do; report the first failure.
	var first error
	for _, chain := range chains {
		err := v.checkChain(chain, court, policy, s.signingTime, now)
		if err == nil {
			return chain[len(chain)-1], nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// checkOneCourt refuses a signer whose chains end at roots pinned for
// different courts: one pinned root issued another (a national root over
// court CAs, a bridge, a cross-certificate), and the signer's court would
// be whichever chain the warrant's court names. custodian trust add-root
// refuses such roots; a store may hold them from before.
func (v *Verifier) checkOneCourt(c *x509.Certificate, chains [][]*x509.Certificate) error {
	var courts []string
	for _, chain := range chains {
		if court := v.Trust.CourtOf(chain[len(chain)-1]); !slices.Contains(courts, court) {
			courts = append(courts, court)
		}
	}
	if len(courts) > 1 {
		return refuse(ReasonCourtMismatch, "the certificate of %q chains to the roots of several courts (%q); "+
			"a pinned root issued another: the trust admin sets the store up again without the lower root (docs/court-trust-admin.md)", personName(c), courts)
	}
	return nil
}

// chains builds the chains from c to a pinned root, with RFC 5280 policy
// processing for the required policies. Go's verifier never requires a
// policy (its initial-explicit-policy is fixed to false) and does not know
// documentSigning, so checkChain checks both along each chain itself.
//
// Built chains are kept (cache.go) under the roots, the certificates and
// the policies, for as long as no certificate that path building may use
// changes validity; a refusal is worked out again every time.
func (v *Verifier) chains(c *x509.Certificate, inter offered, policy trust.Policy, now time.Time) ([][]*x509.Certificate, error) {
	key := chainKey(v.Trust, c, inter.certs, policy.PolicyOIDs)
	if chains, ok := cachedChains(key, now); ok {
		return chains, nil
	}
	opts := x509.VerifyOptions{
		Roots:         v.Trust.Pool(),
		Intermediates: inter.pool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, o := range policy.PolicyOIDs {
		oid, err := x509.ParseOID(o)
		if err != nil {
			return nil, refuseErr(ReasonNoApprovalPolicy, err, "the approval policy names a malformed policy OID")
		}
		opts.CertificatePolicies = append(opts.CertificatePolicies, oid)
	}
	chains, err := c.Verify(opts)
	if err == nil {
		v.keepChains(key, chains, inter.certs, now)
		return chains, nil
	}
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
		return nil, refuseErr(ReasonCertExpired, err, "a certificate in the chain of %q is not valid now", personName(c))
	}
	if len(opts.CertificatePolicies) != 0 {
		opts.CertificatePolicies = nil
		if _, again := c.Verify(opts); again == nil {
			return nil, refuseErr(ReasonMissingPolicy, err, "the chain of %q fails certificate policy processing for %s", personName(c), strings.Join(policy.PolicyOIDs, ", "))
		}
	}
	return nil, refuseErr(ReasonUntrustedChain, err, "certificate of %q does not chain to a pinned court root", personName(c))
}

// offered are the certificates a warrant carries, as a list (for the cache
// key) and as the pool path building draws intermediates from.
type offered struct {
	certs []*x509.Certificate
	pool  *x509.CertPool
}

// keepChains caches chains with the span over which they hold: every
// certificate path building could have used, the warrant's and the pinned
// roots, keeps its validity throughout.
func (v *Verifier) keepChains(key string, chains [][]*x509.Certificate, certs []*x509.Certificate, now time.Time) {
	all := slices.Clone(certs)
	for _, r := range v.Trust.Roots() {
		all = append(all, r.Cert)
	}
	from, to := stableSpan(all, now)
	builtChains.Add(key, &chainResult{chains: chains, from: from, to: to})
}

func (v *Verifier) checkChain(chain []*x509.Certificate, court string, policy trust.Policy, signingTime, now time.Time) error {
	leaf, root := chain[0], chain[len(chain)-1]
	if bound := v.Trust.CourtOf(root); bound != court {
		return refuse(ReasonCourtMismatch, "the warrant names court %q, but %q chains to the root pinned for court %q", court, personName(leaf), bound)
	}
	if err := checkPurpose(chain, policy.EKUs); err != nil {
		return err
	}
	if err := checkPolicies(chain, policy.PolicyOIDs); err != nil {
		return err
	}
	if err := checkNameConstraints(chain); err != nil {
		return err
	}
	for i, c := range chain {
		if signingTime.Before(c.NotBefore) || signingTime.After(c.NotAfter) {
			return refuse(ReasonCertAtSigning, "certificate %q was not valid at the signing time %s", DisplayName(c.Subject.String()), signingTime.UTC().Format(time.RFC3339))
		}
		if i == len(chain)-1 {
			break // the pinned root itself is trusted, not revoked by a CRL
		}
		crl := v.Trust.CRL(chain[i+1])
		if crl == nil {
			if why := v.Trust.UnusableCRL(chain[i+1]); why != nil {
				return refuseErr(ReasonCRLMissing, why, "the stored CRL of %q no longer verifies; set a current one with its issuer's chain (custodian trust set-crl)", chain[i+1].Subject)
			}
			return refuse(ReasonCRLMissing, "no CRL of %q in the trust store; set one with custodian trust set-crl", chain[i+1].Subject)
		}
		if !crl.Fresh(now) {
			return refuse(ReasonCRLStale, "the CRL of %q is not current (next update %v); set a fresh one", chain[i+1].Subject, crl.List.NextUpdate)
		}
		if crl.Revoked(c.SerialNumber) {
			return refuse(ReasonRevoked, "certificate %s is revoked", issuerSerial(c))
		}
	}
	return nil
}

// checkPurpose requires the signer's certificate to carry one of the
// accepted extended key usages, and every CA certificate above it that
// has an EKU extension to allow that usage. anyExtendedKeyUsage counts in
// the signer's certificate only when accepted is listed; in a CA
// certificate it allows everything, as an absent extension does.
func checkPurpose(chain []*x509.Certificate, accepted []string) error {
	leaf := chain[0]
	have, _ := extKeyUsages(leaf)
	usable := slices.DeleteFunc(slices.Clone(accepted), func(o string) bool { return !slices.Contains(have, o) })
	if len(usable) == 0 {
		return refuse(ReasonExtKeyUsage, "certificate of %q has no signing purpose accepted here (extended key usages: %s; accepted: %s)", personName(leaf), OIDList(have), OIDList(accepted))
	}
	for _, ca := range chain[1:] {
		allowed, present := extKeyUsages(ca)
		if !present || slices.Contains(allowed, oidAnyExtKeyUsage) {
			continue
		}
		usable = slices.DeleteFunc(usable, func(o string) bool { return !slices.Contains(allowed, o) })
		if len(usable) == 0 {
			return refuse(ReasonExtKeyUsage, "CA certificate %q does not allow the signing purpose of %q (its extended key usages: %s)", DisplayName(ca.Subject.String()), personName(leaf), OIDList(allowed))
		}
	}
	return nil
}

// checkPolicies requires every policy OID in required along the path: the
// signer's certificate and each intermediate assert it, or an intermediate
// asserts anyPolicy while no certificate of the chain inhibits anyPolicy.
// Policy mapping is refused while policies are required: a mapped policy
// has another OID below the mapping, which this literal check would
// misread. The pinned root is the trust anchor; its policies are not part
// of the path (RFC 5280, 6.1).
func checkPolicies(chain []*x509.Certificate, required []string) error {
	if len(required) == 0 {
		return nil
	}
	anyAllowed := !slices.ContainsFunc(chain, func(c *x509.Certificate) bool { return c.InhibitAnyPolicy > 0 || c.InhibitAnyPolicyZero })
	for i, c := range chain[:len(chain)-1] {
		if len(c.PolicyMappings) != 0 {
			return refuse(ReasonMissingPolicy, "CA certificate %q maps certificate policies, which is not accepted while policies are required", c.Subject)
		}
		asserted := func(o string) bool {
			return slices.ContainsFunc(c.Policies, func(p x509.OID) bool { return p.String() == o })
		}
		if i > 0 && anyAllowed && asserted(oidAnyPolicy) {
			continue
		}
		for _, want := range required {
			if !asserted(want) {
				return refuse(ReasonMissingPolicy, "certificate %q in the chain of %q lacks the required policy %s", c.Subject, personName(chain[0]), want)
			}
		}
	}
	return nil
}

// checkNameConstraints refuses what Go's verifier would skip: a name
// constraint form it does not evaluate, on any certificate of the chain
// (the pinned root was checked when pinned, and is checked again here),
// and an rfc822Name constraint over a certificate below it that carries an
// e-mail address in its subject, to which RFC 5280 applies the constraint
// and Go does not.
func checkNameConstraints(chain []*x509.Certificate) error {
	for i, ca := range chain {
		if err := trust.CheckNameConstraints(ca); err != nil {
			return refuseErr(ReasonNameConstraints, err, "the chain of %q has a name constraint that cannot be checked", personName(chain[0]))
		}
		if len(ca.PermittedEmailAddresses) == 0 && len(ca.ExcludedEmailAddresses) == 0 {
			continue
		}
		for _, c := range chain[:i] {
			if slices.ContainsFunc(c.Subject.Names, func(a pkix.AttributeTypeAndValue) bool { return a.Type.Equal(oidEmailAddress) }) {
				return refuse(ReasonNameConstraints, "%q constrains e-mail addresses and %q has one in its subject name, which the verifier does not check", ca.Subject, c.Subject)
			}
		}
	}
	return nil
}

// extKeyUsages reads the EKU extension as dotted OIDs, and whether the
// certificate has one; x509 turns known ones into constants and leaves
// documentSigning among the unknown, which would need a table to merge.
func extKeyUsages(c *x509.Certificate) (oids []string, present bool) {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidExtKeyUsage) {
			continue
		}
		var list []asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(e.Value, &list); err != nil || len(rest) != 0 {
			return nil, true // x509 parsed it; should it not, nothing is allowed
		}
		out := make([]string, len(list))
		for i, o := range list {
			out[i] = o.String()
		}
		return out, true
	}
	return nil, false
}

// OIDList shows a list of OIDs to a person ("none" for an empty one).
func OIDList(oids []string) string {
	if len(oids) == 0 {
		return "none"
	}
	return strings.Join(oids, ", ")
}
