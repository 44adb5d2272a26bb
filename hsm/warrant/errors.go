package warrant

import (
	"errors"
	"fmt"
)

// Reason is the machine-readable cause of a refusal. Reasons are stable: the
// appliance logs them, puts them in the ledger and maps each one to an API
// code, so a value is never renamed or reused for another cause.
type Reason string

// Format refusals: the warrant document itself.
const (
	ReasonTooLarge       Reason = "too_large"
	ReasonMalformedJSON  Reason = "malformed_json"
	ReasonUnknownField   Reason = "unknown_field"
	ReasonDuplicateKey   Reason = "duplicate_key"
	ReasonTrailingData   Reason = "trailing_data"
	ReasonMissingField   Reason = "missing_field"
	ReasonBadVersion     Reason = "bad_version"
	ReasonBadField       Reason = "bad_field"
	ReasonBadText        Reason = "bad_text" // a character the display cannot show as signed
	ReasonBadTime        Reason = "bad_time"
	ReasonBadWindow      Reason = "bad_window"
	ReasonWindowTooLong  Reason = "window_too_long"
	ReasonBadRecipient   Reason = "bad_recipient"
	ReasonDuplicateEntry Reason = "duplicate_entry"
	ReasonBadEnvelope    Reason = "bad_envelope"
)

// CMS refusals: the signed envelope.
const (
	ReasonMalformedCMS        Reason = "malformed_cms"
	ReasonNotDER              Reason = "not_der"
	ReasonNotSignedData       Reason = "not_signed_data"
	ReasonDetached            Reason = "detached_content"
	ReasonWrongContentType    Reason = "wrong_content_type"
	ReasonNoSigners           Reason = "no_signers"
	ReasonTooManySigners      Reason = "too_many_signers"
	ReasonBadAlgorithm        Reason = "bad_algorithm"
	ReasonWeakKey             Reason = "weak_key"
	ReasonNoSignedAttributes  Reason = "no_signed_attributes"
	ReasonBadSignedAttributes Reason = "bad_signed_attributes"
	ReasonContentTypeMismatch Reason = "content_type_mismatch"
	ReasonDigestMismatch      Reason = "digest_mismatch"
	ReasonNoSigningTime       Reason = "no_signing_time"
	ReasonUnsignedAttributes  Reason = "unsigned_attributes"
	ReasonSignerCertMissing   Reason = "signer_cert_missing"
	ReasonBadSignature        Reason = "bad_signature"
)

// Trust refusals: who signed, and whether the court PKI vouches for them.
const (
	ReasonNoTrustRoots     Reason = "no_trust_roots"
	ReasonUntrustedChain   Reason = "untrusted_chain"
	ReasonCertExpired      Reason = "cert_expired"
	ReasonCertNotYetValid  Reason = "cert_not_yet_valid"
	ReasonCertAtSigning    Reason = "cert_invalid_at_signing"
	ReasonSignedInFuture   Reason = "signed_in_future"
	ReasonKeyUsage         Reason = "key_usage"
	ReasonSignerIsCA       Reason = "signer_is_ca"
	ReasonNoSignerName     Reason = "no_signer_name"
	ReasonExtKeyUsage      Reason = "ext_key_usage"
	ReasonMissingPolicy    Reason = "missing_policy"
	ReasonCRLMissing       Reason = "crl_missing"
	ReasonCRLStale         Reason = "crl_stale"
	ReasonRevoked          Reason = "revoked"
	ReasonDuplicateSigner  Reason = "duplicate_signer"
	ReasonTooFewSigners    Reason = "too_few_signers"
	ReasonNoApprovalPolicy Reason = "no_approval_policy"
	ReasonNameConstraints  Reason = "unsupported_name_constraint"
	ReasonCourtMismatch    Reason = "court_mismatch"
)

// Addressing refusals: whether this appliance may act on the warrant now.
const (
	ReasonNotYetValid   Reason = "not_yet_valid"
	ReasonExpired       Reason = "expired"
	ReasonNotAddressed  Reason = "not_addressed"
	ReasonUnknownKeyID  Reason = "unknown_key_id"
	ReasonNoCustodianID Reason = "no_custodian_id"
	ReasonNoHeldKeys    Reason = "no_held_keys"
)

// Reasons lists every reason, for callers that map each one to a code.
func Reasons() []Reason {
	return []Reason{
		ReasonTooLarge,
		ReasonMalformedJSON,
		ReasonUnknownField,
		ReasonDuplicateKey,
		ReasonTrailingData,
		ReasonMissingField,
		ReasonBadVersion,
		ReasonBadField,
		ReasonBadText,
		ReasonBadTime,
		ReasonBadWindow,
		ReasonWindowTooLong,
		ReasonBadRecipient,
		ReasonDuplicateEntry,
		ReasonBadEnvelope,
		ReasonMalformedCMS,
		ReasonNotDER,
		ReasonNotSignedData,
		ReasonDetached,
		ReasonWrongContentType,
		ReasonNoSigners,
		ReasonTooManySigners,
		ReasonBadAlgorithm,
		ReasonWeakKey,
		ReasonNoSignedAttributes,
		ReasonBadSignedAttributes,
		ReasonContentTypeMismatch,
		ReasonDigestMismatch,
		ReasonNoSigningTime,
		ReasonUnsignedAttributes,
		ReasonSignerCertMissing,
		ReasonBadSignature,
		ReasonNoTrustRoots,
		ReasonUntrustedChain,
		ReasonCertExpired,
		ReasonCertNotYetValid,
		ReasonCertAtSigning,
		ReasonSignedInFuture,
		ReasonKeyUsage,
		ReasonSignerIsCA,
		ReasonNoSignerName,
		ReasonExtKeyUsage,
		ReasonMissingPolicy,
		ReasonCRLMissing,
		ReasonCRLStale,
		ReasonRevoked,
		ReasonDuplicateSigner,
		ReasonTooFewSigners,
		ReasonNoApprovalPolicy,
		ReasonNameConstraints,
		ReasonCourtMismatch,
		ReasonNotYetValid,
		ReasonExpired,
		ReasonNotAddressed,
		ReasonUnknownKeyID,
		ReasonNoCustodianID,
		ReasonNoHeldKeys,
		ReasonListMalformed,
		ReasonListTruncated,
		ReasonListTooLarge,
		ReasonListDuplicate,
		ReasonListMismatch,
		ReasonListKeyID,
		ReasonListTarget,
		ReasonListMissing,
		ReasonListUnexpected,
	}
}

// Error is a refusal. Every refusal of this package is an *Error, so the
// caller can log, count and report Reason without parsing messages.
type Error struct {
	Reason Reason
	msg    string
	err    error
}

func (e *Error) Error() string {
	if e.err != nil {
		return e.msg + ": " + e.err.Error()
	}
	return e.msg
}

func (e *Error) Unwrap() error { return e.err }

// Is makes errors.Is(err, &Error{Reason: r}) match any refusal for reason r.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// ReasonOf returns the reason of the refusal in err's chain, or "" when err
// is not a refusal of this package.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func refuse(r Reason, format string, args ...any) *Error {
	return &Error{Reason: r, msg: fmt.Sprintf(format, args...)}
}

func refuseErr(r Reason, err error, format string, args ...any) *Error {
	return &Error{Reason: r, msg: fmt.Sprintf(format, args...), err: err}
}
