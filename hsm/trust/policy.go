package trust

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
)

// Extended key usages a signer certificate may carry.
const (
	// OIDDocumentSigning is id-kp-documentSigning (RFC 9336): signing
	// human-readable documents.
	OIDDocumentSigning = "1.3.6.1.5.5.7.3.36"
	// OIDEmailProtection is id-kp-emailProtection: S/MIME, which is how
	// many court PKIs issue judges' signing certificates.
	OIDEmailProtection = "1.3.6.1.5.5.7.3.4"
	// OIDAnyExtKeyUsage is anyExtendedKeyUsage. In a signer certificate it
	// counts only when the policy lists it; in a CA certificate it
	// constrains nothing, like an absent EKU extension.
	OIDAnyExtKeyUsage = "2.5.29.37.0"
)

// DefaultEKUs are the signing purposes accepted unless the policy says
// otherwise.
func DefaultEKUs() []string { return []string{OIDDocumentSigning, OIDEmailProtection} }

// Policy is what a warrant's signers must satisfy beyond the chain.
type Policy struct {
	// Signers is how many distinct signers a warrant needs: 1, or 2 for a
	// "double lock" where a judge and a second authority both sign.
	Signers int `json:"signers"`
	// PolicyOIDs are certificate policies every signer's path must carry:
	// each certificate below the root asserts every one of them (an
	// intermediate may assert anyPolicy instead). Empty: none required.
	PolicyOIDs []string `json:"policy_oids,omitempty"`
	// EKUs are the accepted signing purposes: a signer certificate must
	// carry at least one of them, and every CA certificate of its chain
	// that has an EKU extension must allow that one. Never empty.
	EKUs []string `json:"ekus"`
}

// DefaultPolicy is used until a policy is set: one signer, no required
// certificate policy, DefaultEKUs.
func DefaultPolicy() Policy { return Policy{Signers: 1, EKUs: DefaultEKUs()} }

// policyFileVersion is the version of policy.json. Before it, "ekus" meant
// "all of these"; a file without a version is refused.
const policyFileVersion = 1

type policyFile struct {
	Version int `json:"version"`
	Policy
}

func (s *Store) loadPolicy() error {
	data, err := os.ReadFile(filepath.Join(s.dir, "policy.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var f policyFile
	if err := strictjson.Decode(data, &f, 64<<10); err != nil {
		return fmt.Errorf("trust store policy.json: %w", err)
	}
	if f.Version != policyFileVersion {
		return fmt.Errorf("the trust store's policy.json was written by an older version (version %d, not %d), whose EKU list meant something else; "+
			"move the store away and set it up again (custodian trust add-root FILE --court NAME, set-crl, set-policy)", f.Version, policyFileVersion)
	}
	if len(f.EKUs) == 0 {
		f.EKUs = DefaultEKUs() // absent never means "any purpose"
	}
	if err := f.check(); err != nil {
		return fmt.Errorf("trust store policy.json: %w", err)
	}
	s.policy = f.Policy
	return nil
}

// SetPolicy checks and stores the approval policy.
func (s *Store) SetPolicy(p Policy) error {
	if err := p.check(); err != nil {
		return err
	}
	p.EKUs, p.PolicyOIDs = slices.Clone(p.EKUs), slices.Clone(p.PolicyOIDs)
	s.policy = p
	if s.dir == "" {
		return nil
	}
	data, err := json.MarshalIndent(policyFile{Version: policyFileVersion, Policy: p}, "", "  ")
	if err != nil {
		return err
	}
	return s.write("policy.json", append(data, '\n'))
}

func (p Policy) check() error {
	if p.Signers < 1 || p.Signers > 8 {
		return fmt.Errorf("approval policy needs 1 to 8 signers, not %d", p.Signers)
	}
	if len(p.EKUs) == 0 {
		return errors.New("the approval policy needs at least one accepted extended key usage (default: documentSigning " +
			OIDDocumentSigning + " and emailProtection " + OIDEmailProtection + "); an empty list would accept a certificate made for anything")
	}
	for _, o := range append(slices.Clone(p.PolicyOIDs), p.EKUs...) {
		if err := checkOID(o); err != nil {
			return err
		}
	}
	return nil
}

// checkOID accepts a dotted object identifier in canonical form, such as
// 1.3.6.1.5.5.7.3.4.
func checkOID(s string) error {
	o, err := x509.ParseOID(s)
	if err != nil || o.String() != s {
		return fmt.Errorf("%q is not a dotted OID such as 1.3.6.1.5.5.7.3.4", s)
	}
	return nil
}
