package enrollment

import (
	"bytes"
	"crypto/subtle"
	"crypto/x509"
	"embed"
	"encoding/asn1"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/tpm"
)

// VerifyOptions relax or feed verification. The zero value is strictest.
type VerifyOptions struct {
	// Secret is the challenge secret the verifier kept. Without it the
	// AK's binding to the EK is unproven and verification fails, unless
	// AllowUnboundAK is set.
	Secret         []byte
	AllowUnboundAK bool
	// Records, the escrow authority's records of this custodian (already
	// opened with its key: OpenRecord), stand in for Secret when the one
	// that stands (Standing: the newest of this TPM, not withdrawn, not
	// expired) is a verified record naming the EK, AK and import key: the
	// authority checked the challenge. Give every record you have, so
	// that a refusal withdraws an older verified record.
	Records []*Record
	// EKRoots are the TPM vendor roots an EK certificate must chain to;
	// nil means the vendor roots built into this binary.
	EKRoots *x509.CertPool
	// AllowUncertifiedEK accepts an EK without a certificate (a TPM
	// simulator, or a device enrolled in person), trusting it on first use.
	AllowUncertifiedEK bool
	// Now is the time for certificate and record validity; zero means time.Now.
	Now time.Time
}

// Verified is what a successful verification established.
type Verified struct {
	EK          *tpm.EK
	AK          *tpm.AKPublic
	ImportKey   *tpm.ImportKey // certified by AK: as bound to the EK as the AK is
	EKCertified bool           // the EK chains to a vendor root
	AKBound     bool           // the AK answered a challenge through this EK, or a record says it did
	// AKChallenged: the AK answered the challenge in this verification
	// (the secret was given), not on the word of a record.
	AKChallenged bool
}

// Verification errors a caller may act on.
var (
	ErrAKUnbound     = errors.New("the attestation key is not proven to be in this TPM")
	ErrEKUncertified = errors.New("the endorsement key has no manufacturer certificate")
	// ErrEKUntrusted: the EK has a certificate, but it does not chain to
	// the vendor roots the verifier trusts.
	ErrEKUntrusted = errors.New("EK certificate does not chain to a TPM vendor root")
)

// Verify checks e: the EK and its certificate chain, the AK's attributes,
// the AK's binding to the EK (through the challenge secret), the quote
// over the recorded PCRs and nonce, and the AK's certification, with the
// same nonce, of the import key in its template.
func (e *Enrollment) Verify(opts VerifyOptions) (*Verified, error) {
	if err := CheckID(e.CustodianID); err != nil {
		return nil, err
	}
	ek, err := tpm.ParseEK(e.EK.PublicKey)
	if err != nil {
		return nil, err
	}
	if ek.Kind().String() != e.EK.Kind {
		return nil, fmt.Errorf("endorsement key is %s, the enrollment says %q", ek.Kind(), e.EK.Kind)
	}
	v := &Verified{EK: ek}
	if v.EKCertified, err = e.verifyEKCertificate(ek, opts); err != nil {
		return nil, err
	}
	if v.AK, err = tpm.ParseAKPublic(e.AK); err != nil {
		return nil, err
	}
	if v.AKBound, err = e.checkBinding(opts); err != nil {
		return nil, err
	}
	v.AKChallenged = v.AKBound
	if err := tpm.VerifyQuote(v.AK, &e.Quote, e.Nonce, e.PCRs); err != nil {
		return nil, err
	}
	if v.ImportKey, err = e.verifyImportKey(v.AK, ek.Kind()); err != nil {
		return nil, err
	}
	if opts.Records != nil {
		now := opts.Now
		if now.IsZero() {
			now = time.Now()
		}
		if _, err := Standing(opts.Records, e, v, now); err != nil {
			return nil, err
		}
		v.AKBound = true
	}
	return v, nil
}

// verifyImportKey checks that the import key is of the EK's kind and that
// the AK certified it, in the import key template, with the quote's nonce.
func (e *Enrollment) verifyImportKey(ak *tpm.AKPublic, kind tpm.EKKind) (*tpm.ImportKey, error) {
	key, err := tpm.ParseImportKey(e.ImportKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if key.Kind() != kind {
		return nil, fmt.Errorf("the import key is %s and the endorsement key %s; enroll the device again", key.Kind(), kind)
	}
	if err := tpm.VerifyImportKeyCertification(ak, key, &e.ImportKey.Certification, e.Nonce); err != nil {
		return nil, fmt.Errorf("%w; enroll the device again", err)
	}
	return key, nil
}

func (e *Enrollment) checkBinding(opts VerifyOptions) (bool, error) {
	if opts.Records != nil {
		return false, nil // Verify checks the record once it has every key
	}
	if opts.Secret == nil {
		if opts.AllowUnboundAK {
			return false, nil
		}
		return false, fmt.Errorf("%w: answer a challenge and verify with its secret", ErrAKUnbound)
	}
	if !e.Activated {
		return false, fmt.Errorf("%w: the enrollment did not answer a challenge", ErrAKUnbound)
	}
	if subtle.ConstantTimeCompare(bindingNonce(opts.Secret, e.CustodianID), e.Nonce) != 1 {
		return false, fmt.Errorf("%w: the enrollment answered another challenge", ErrAKUnbound)
	}
	return true, nil
}

// verifyEKCertificate checks that the certificate is for ek and chains to
// a vendor root. It reports whether the EK is certified.
func (e *Enrollment) verifyEKCertificate(ek *tpm.EK, opts VerifyOptions) (bool, error) {
	if e.EK.Certificate == nil {
		if opts.AllowUncertifiedEK {
			return false, nil
		}
		return false, ErrEKUncertified
	}
	cert, err := x509.ParseCertificate(e.EK.Certificate)
	if err != nil {
		return false, fmt.Errorf("EK certificate: %w", err)
	}
	certKey, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil || !bytes.Equal(certKey, ek.MarshalPKIX()) {
		return false, errors.New("EK certificate is for another key")
	}
	roots, intermediates, err := ekTrust(opts.EKRoots, e.EK.Chain)
	if err != nil {
		return false, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	// EK certificates carry their subject in a critical SubjectAltName
	// (TPM manufacturer, model, version) that Go does not interpret.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(cert.UnhandledCriticalExtensions,
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(oidSubjectAltName) })
	_, err = cert.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: intermediates, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return false, fmt.Errorf("%w: %s", ErrEKUntrusted, chainFailure(err))
	}
	return true, nil
}

// chainFailure says in words why an EK certificate did not chain.
func chainFailure(err error) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknown):
		return "no certificate of its issuer is among the roots given or built in"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "a certificate of its chain has expired or is not yet valid"
	case errors.As(err, &invalid):
		return "a certificate of its chain may not issue it"
	}
	return "its signature chain does not verify"
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

//go:embed ekroots/*.pem
var vendorCerts embed.FS

// ekTrust returns the roots and the intermediates (vendor intermediates
// built in, plus those the TPM stored) for EK certificate chains.
func ekTrust(roots *x509.CertPool, chain [][]byte) (*x509.CertPool, *x509.CertPool, error) {
	intermediates := x509.NewCertPool()
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("EK chain certificate: %w", err)
		}
		intermediates.AddCert(c)
	}
	builtinRoots, builtinIntermediates, err := VendorCertificates()
	if err != nil {
		return nil, nil, err
	}
	for _, c := range builtinIntermediates {
		intermediates.AddCert(c)
	}
	if roots == nil {
		roots = x509.NewCertPool()
		for _, c := range builtinRoots {
			roots.AddCert(c)
		}
	}
	return roots, intermediates, nil
}

// VendorCertificates returns the TPM vendors' EK CA certificates built into
// the binary, split into self-signed roots and intermediates.
func VendorCertificates() (roots, intermediates []*x509.Certificate, err error) {
	err = fs.WalkDir(vendorCerts, "ekroots", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := vendorCerts.ReadFile(path)
		if err != nil {
			return err
		}
		certs, err := certfile.Certificates(data)
		if err != nil {
			return fmt.Errorf("built-in EK CA %s: %w", path, err)
		}
		for _, c := range certs {
			if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
				roots = append(roots, c)
			} else {
				intermediates = append(intermediates, c)
			}
		}
		return nil
	})
	return roots, intermediates, err
}
