package release

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// Code is the stable, machine-readable cause of a refusal or failure. It is
// the "code" of an API error and the Reason of the ledger entry that logs it.
// Warrant refusals use the warrant package's Reason unchanged (e.g.
// "revoked", "crl_stale", "not_addressed"); the codes below are the
// appliance's own. A code is never renamed or reused.
type Code string

// The appliance's codes.
const (
	CodeBusy             Code = "busy"                       // another warrant awaits approval
	CodeReplayed         Code = "replayed"                   // this warrant (issuer, serial) was used before
	CodeBeforeFloor      Code = "signed_before_floor"        // signed before the ledger's replay floor
	CodeLedgerBlocked    Code = "ledger_blocked"             // rollback or clone detected
	CodeStateMismatch    Code = "state_mismatch"             // the data directory is not the state the TPM bound
	CodeStateInterrupt   Code = "change_interrupted"         // a trust or bundle change was cut off before its entry
	CodeForeignLedgerKey Code = "foreign_ledger_key"         // the checkpoint key is not the one the TPM anchored at ledger init
	CodeClockBehind      Code = "clock_behind"               // the clock is behind the newest entry
	CodeImageNotApproved Code = "image_not_approved"         // the checkpoint key does not unseal
	CodePCRMismatch      Code = "pcr_mismatch"               // the PCRs are not the share's policy
	CodeDowngrade        Code = "downgrade"                  // the image's security version is below the TPM's floor
	CodeNoPress          Code = "no_press"                   // no press within the window
	CodeButtonHeld       Code = "button_held"                // held or stuck for the whole window
	CodeTooLarge              = Code(warrant.ReasonTooLarge) // body over 64 KiB: the same cause as the warrant's own cap
	CodeRateLimited      Code = "rate_limited"               // per-client rate limit
	CodeLedgerBusy       Code = "ledger_busy"                // the tile routes' concurrency bound is full: retry after Retry-After
	CodeNotFound         Code = "not_found"
	CodeBadRequest       Code = "bad_request"
	CodeUnavailable      Code = "unavailable" // e.g. attestation not configured
	CodeShuttingDown     Code = "shutting_down"
	CodeAttestBusy       Code = "attest_busy"            // an attestation or a release holds the TPM
	CodeAttestFailed     Code = "attest_failed"          // the TPM could not quote (details in the daemon's log)
	CodeTPMFull          Code = "tpm_full"               // after the press, before any entry: the TPM's slots are taken
	CodeUnsealFailed     Code = "unseal_failed"          // failure after the ledger entry
	CodeSealFailed       Code = "seal_failed"            // failure after the ledger entry
	CodeStoreFailed      Code = "store_failed"           // failure after the ledger entry
	CodeInterrupted      Code = ledger.ReasonInterrupted // the daemon stopped in the request (failure after an entry, refusal before one)
	CodeLedgerFailed     Code = "ledger_failed"          // the release entry could not be appended
	CodeInternal         Code = "internal"               // a bug or an I/O error before any entry
	CodeNotVerified      Code = "not_verified"           // a warrant error without a reason (never expected)
	CodeNoShare          Code = "no_share"               // a key ID with no readable bundle
	CodeNoEnvelopes      Code = "no_envelopes"           // a scoped key ID the warrant names no envelope of
	CodeNotScoped        Code = "envelopes_not_scoped"   // envelopes named for a share-mode key ID
	CodePartialFailed    Code = "partial_failed"         // failure after the ledger entry (scoped mode)
	// CodeUnprovenEnvelope: an envelope the warrant names lacks its
	// sealer's valid proof of knowledge of its ephemeral key (a version 1
	// envelope, or one made from another envelope's key); nothing is
	// computed on it.
	CodeUnprovenEnvelope Code = "envelope_unproven"
	// With officers' CAs configured (API.Officers), a request route needs a
	// client certificate that chains to one of them.
	CodeClientCertRequired  Code = "client_cert_required"
	CodeClientCertUntrusted Code = "client_cert_untrusted"
	// CodeChangedAfterApproval: the warrant verified at submission and no
	// longer did after the press (revoked, expired, replayed meanwhile…).
	CodeChangedAfterApproval Code = "changed_after_approval"
	// CodeWitnessTimeout: after the release entry, before the share or
	// partials are unsealed, the escrow file's witness quorum did not
	// cosign a checkpoint holding the entry in time. Nothing leaves; the
	// request awaits its witnesses (a status code, never a refusal).
	CodeWitnessTimeout Code = "witness_timeout"
	// CodeWitnessRefused: a witness refused for good, before the summary
	// or after the press (nothing written, the warrant not spent) or after
	// the release entry (the failure is logged): it cosigned another
	// history of this ledger, or it does not know the log or its key.
	// Nothing leaves.
	CodeWitnessRefused Code = "witness_refused"
	// CodeWitnessUnreachable: before the summary, or after the press and
	// before the release entry, the escrow file's witness quorum did not
	// cosign the appliance's current checkpoint in time. Nothing was
	// written for the release: the warrant is not spent and can be
	// submitted again once the witnesses answer. (witness_refused before
	// the entry likewise spends nothing.)
	CodeWitnessUnreachable Code = "witness_unreachable"
)

// Refusal is an error with its code, the HTTP status it maps to, and the
// ledger index of the entry that logged it (-1 if none could be written).
type Refusal struct {
	Code        Code
	Err         error
	LedgerIndex int64
}

func (r *Refusal) Error() string { return fmt.Sprintf("%s: %v", r.Code, r.Err) }
func (r *Refusal) Unwrap() error { return r.Err }

// Status is the HTTP status for the refusal's code.
func (r *Refusal) Status() int { return HTTPStatus(r.Code) }

// HTTPStatus maps a code to its HTTP status.
func HTTPStatus(c Code) int {
	switch c {
	case CodeBusy:
		return http.StatusConflict
	case CodeReplayed:
		return http.StatusConflict
	case CodeLedgerBlocked, CodeStateMismatch, CodeStateInterrupt, CodeForeignLedgerKey, CodeClockBehind, CodeImageNotApproved, CodePCRMismatch, CodeDowngrade, CodeShuttingDown, CodeNoShare, CodeTPMFull, CodeLedgerBusy, CodeWitnessUnreachable:
		return http.StatusServiceUnavailable
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRateLimited, CodeAttestBusy:
		return http.StatusTooManyRequests
	case CodeNotFound:
		return http.StatusNotFound
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeUnavailable:
		return http.StatusNotImplemented
	case CodeNoPress, CodeButtonHeld, CodeClientCertRequired, CodeClientCertUntrusted, CodeChangedAfterApproval:
		return http.StatusForbidden
	case CodeInternal, CodeAttestFailed, CodeUnsealFailed, CodeSealFailed, CodeStoreFailed, CodeInterrupted, CodeLedgerFailed, CodePartialFailed:
		return http.StatusInternalServerError
	case CodeWitnessTimeout: // a request's status code, not a refusal: for completeness
		return http.StatusGatewayTimeout
	case CodeWitnessRefused:
		return http.StatusBadGateway
	}
	// Every warrant refusal: the request was understood and refused.
	return http.StatusUnprocessableEntity
}

// codeOf maps an error from verification or the ledger to its code.
func codeOf(err error) Code {
	if r := warrant.ReasonOf(err); r != "" {
		return Code(r)
	}
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		return ref.Code
	case errors.Is(err, ledger.ErrStateMismatch):
		return CodeStateMismatch
	case errors.Is(err, ledger.ErrChangeInterrupted):
		return CodeStateInterrupt
	case errors.Is(err, ledger.ErrForeignLedgerKey):
		return CodeForeignLedgerKey
	case errors.Is(err, ledger.ErrStateUnauthenticated):
		return CodeImageNotApproved
	case errors.Is(err, ledger.ErrBlocked):
		return CodeLedgerBlocked
	case errors.Is(err, ledger.ErrClockBehind):
		return CodeClockBehind
	case errors.Is(err, ledger.ErrReplay):
		return CodeReplayed
	}
	return CodeNotVerified
}

// Codes lists every code the appliance can return, warrant reasons
// included, for documentation and for clients that map each one.
func Codes() []Code {
	out := []Code{CodeBusy, CodeReplayed, CodeBeforeFloor, CodeLedgerBlocked, CodeStateMismatch, CodeStateInterrupt, CodeForeignLedgerKey,
		CodeClockBehind, CodeImageNotApproved, CodePCRMismatch, CodeDowngrade, CodeNoPress, CodeButtonHeld, CodeTooLarge,
		CodeRateLimited, CodeLedgerBusy, CodeNotFound, CodeBadRequest, CodeUnavailable, CodeShuttingDown,
		CodeUnsealFailed, CodeSealFailed, CodeStoreFailed, CodeInterrupted, CodeLedgerFailed,
		CodeInternal, CodeNotVerified, CodeNoShare,
		CodeClientCertRequired, CodeClientCertUntrusted, CodeChangedAfterApproval,
		CodeNoEnvelopes, CodeNotScoped, CodeUnprovenEnvelope, CodePartialFailed, CodeAttestBusy, CodeAttestFailed, CodeTPMFull,
		CodeWitnessTimeout, CodeWitnessRefused, CodeWitnessUnreachable}
	for _, r := range warrant.Reasons() {
		if Code(r) != CodeTooLarge {
			out = append(out, Code(r))
		}
	}
	return out
}
