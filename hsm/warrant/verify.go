package warrant

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/custodian-project/custodian/hsm/trust"
)

// SigningSkew is how far a signing time may lie ahead of the appliance's
// clock: the judge's workstation and the appliance keep separate clocks.
const SigningSkew = 5 * time.Minute

var oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}

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

// Identity is a signer as the court PKI vouches for it.
type Identity struct {
	Name        string    `json:"name"` // the certificate's common name: the judge's name
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	Serial      string    `json:"serial"`      // hex
	Fingerprint string    `json:"fingerprint"` // SHA-256 of the certificate, hex
	SigningTime time.Time `json:"signing_time"`
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
	ids, err := v.checkSigners(m, policy, now)
	if err != nil {
		return nil, err
	}
	if err := checkWindowNow(w, now); err != nil {
		return nil, err
	}
	return &Verified{Warrant: w, Content: m.content, Digest: Digest(m.content), Replay: w.ReplayKey(), Signers: ids}, nil
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
// distinct people signed.
func (v *Verifier) checkSigners(m *message, policy trust.Policy, now time.Time) ([]Identity, error) {
	inter := x509.NewCertPool()
	for _, c := range m.certs {
		inter.AddCert(c)
	}
	var ids []Identity
	var keys, subjects [][]byte
	for _, s := range m.signers {
		if err := v.checkCertificate(s, inter, policy, now); err != nil {
			return nil, err
		}
		// Two signatures count as two signers only if both the person
		// (subject) and the key differ: a judge with two cards is one judge.
		if containsBytes(keys, s.cert.RawSubjectPublicKeyInfo) || containsBytes(subjects, s.cert.RawSubject) {
			return nil, refuse(ReasonDuplicateSigner, "%q signed twice; the approval policy counts distinct signers", s.cert.Subject.CommonName)
		}
		keys = append(keys, s.cert.RawSubjectPublicKeyInfo)
		subjects = append(subjects, s.cert.RawSubject)
		ids = append(ids, identityOf(s))
	}
	if len(ids) < policy.Signers {
		return nil, refuse(ReasonTooFewSigners, "warrant has %d distinct signer(s); the approval policy needs %d", len(ids), policy.Signers)
	}
	return ids, nil
}

func containsBytes(list [][]byte, b []byte) bool {
	return slices.ContainsFunc(list, func(x []byte) bool { return bytes.Equal(x, b) })
}

func identityOf(s signature) Identity {
	sum := sha256.Sum256(s.cert.Raw)
	return Identity{
		Name:        s.cert.Subject.CommonName,
		Subject:     s.cert.Subject.String(),
		Issuer:      s.cert.Issuer.String(),
		Serial:      s.cert.SerialNumber.Text(16),
		Fingerprint: hex.EncodeToString(sum[:]),
		SigningTime: s.signingTime,
	}
}

// checkCertificate checks one signer's certificate: usage, policies, a
// chain to a pinned root valid now and at signing time, and revocation of
// every certificate in the chain by a fresh CRL of its issuer.
func (v *Verifier) checkCertificate(s signature, inter *x509.CertPool, policy trust.Policy, now time.Time) error {
	c := s.cert
	// A judge is a person, never a CA: a CA key signing warrants would sit
	// outside revocation (its own issuer's CRL aside) and above the judges.
	if c.BasicConstraintsValid && c.IsCA {
		return refuse(ReasonSignerIsCA, "certificate of %q is a CA certificate; warrants are signed with a judge's certificate", c.Subject.CommonName)
	}
	if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return refuse(ReasonKeyUsage, "certificate of %q is not for digital signatures (key usage)", c.Subject.CommonName)
	}
	if err := checkCertPolicies(c, policy); err != nil {
		return err
	}
	if now.Before(c.NotBefore) {
		return refuse(ReasonCertNotYetValid, "certificate of %q is not valid before %v", c.Subject.CommonName, c.NotBefore)
	}
	if now.After(c.NotAfter) {
		return refuse(ReasonCertExpired, "certificate of %q expired at %v", c.Subject.CommonName, c.NotAfter)
	}
	if s.signingTime.After(now.Add(SigningSkew)) {
		return refuse(ReasonSignedInFuture, "signing time %v is in the future; check the clocks", s.signingTime)
	}
	chains, err := c.Verify(x509.VerifyOptions{
		Roots:         v.Trust.Pool(),
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return refuseErr(ReasonCertExpired, err, "a certificate in the chain of %q is not valid now", c.Subject.CommonName)
		}
		return refuseErr(ReasonUntrustedChain, err, "certificate of %q does not chain to a pinned court root", c.Subject.CommonName)
	}
	// Any chain that passes every check will do; report the first failure.
	var first error
	for _, chain := range chains {
		err := v.checkChain(chain, s.signingTime, now)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

func (v *Verifier) checkChain(chain []*x509.Certificate, signingTime, now time.Time) error {
	for i, c := range chain {
		if signingTime.Before(c.NotBefore) || signingTime.After(c.NotAfter) {
			return refuse(ReasonCertAtSigning, "certificate %q was not valid at the signing time %v", c.Subject, signingTime)
		}
		if i == len(chain)-1 {
			break // the pinned root itself is trusted, not revoked by a CRL
		}
		crl := v.Trust.CRL(chain[i+1])
		if crl == nil {
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

// checkCertPolicies requires every policy OID and EKU the policy names.
func checkCertPolicies(c *x509.Certificate, policy trust.Policy) error {
	for _, want := range policy.PolicyOIDs {
		if !slices.ContainsFunc(c.Policies, func(o x509.OID) bool { return o.String() == want }) {
			return refuse(ReasonMissingPolicy, "certificate of %q lacks the required policy %s", c.Subject.CommonName, want)
		}
	}
	if len(policy.EKUs) == 0 {
		return nil
	}
	ekus := extKeyUsages(c)
	for _, want := range policy.EKUs {
		if !slices.Contains(ekus, want) {
			return refuse(ReasonExtKeyUsage, "certificate of %q lacks the required extended key usage %s", c.Subject.CommonName, want)
		}
	}
	return nil
}

// extKeyUsages reads the EKU extension as dotted OIDs; x509 turns known
// ones into constants, which would need a table to map back.
func extKeyUsages(c *x509.Certificate) []string {
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidExtKeyUsage) {
			continue
		}
		var oids []asn1.ObjectIdentifier
		if rest, err := asn1.Unmarshal(e.Value, &oids); err != nil || len(rest) != 0 {
			return nil
		}
		out := make([]string, len(oids))
		for i, o := range oids {
			out[i] = o.String()
		}
		return out
	}
	return nil
}
