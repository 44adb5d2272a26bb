// Package attest lets anyone ask a custodian what it is running and what
// its ledger says, and check the answer against the custodian's enrollment
// and the approved image's policy.
//
// An [Attestation] is a TPM quote, by the attestation key the device
// enrolled with, over the policy's PCRs. Its qualifying data binds the
// caller's nonce and the signed ledger checkpoint it carries:
//
//	SHA-256("custodian attest v1" 0x00 || nonce || SHA-256(checkpoint))
//
// so the answer is fresh, and the checkpoint is the one the device had
// when it quoted. [Attestation.Verify] checks the quote, the nonce, that
// the quoted PCRs are the policy's, that the boot event log (TCG Canonical
// Event Log) replays to them and lists the policy's events, and, given the
// custodian's ledger key, the checkpoint's signature.
//
// The file is JSON, at most 256 KiB, parsed strictly.
package attest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
)

// Version of the attestation format.
const Version = 1

const maxSize = 256 << 10

// A nonce is MinNonce to MaxNonce bytes, at both ends: the appliance's
// route, `custodian attest` and its verify take the same range.
const (
	MinNonce = 8
	MaxNonce = 64
)

// Attestation is what `custodian attest` returns.
type Attestation struct {
	Version     int           `json:"version"`
	CustodianID string        `json:"custodian_id"`
	Time        time.Time     `json:"time"` // the device's clock, informative only
	Nonce       []byte        `json:"nonce"`
	PCRs        tpm.PCRValues `json:"pcrs"`
	EventLog    []byte        `json:"event_log"`
	Checkpoint  string        `json:"checkpoint"`
	Quote       tpm.Quote     `json:"quote"`
}

// ErrMismatch wraps every reason an attestation does not match what the
// verifier expects.
var ErrMismatch = errors.New("attestation does not verify")

func qualifyingData(nonce []byte, checkpoint string) []byte {
	cp := sha256.Sum256([]byte(checkpoint))
	h := sha256.New()
	h.Write([]byte("custodian attest v1\x00"))
	h.Write(nonce)
	h.Write(cp[:])
	return h.Sum(nil)
}

// Create quotes the given PCRs with the device's attestation key, binding
// nonce and checkpoint.
func Create(t transport.TPM, custodianID string, nonce []byte, pcrs []int, eventLog []byte, checkpoint string, now time.Time) (*Attestation, error) {
	if len(nonce) < MinNonce || len(nonce) > MaxNonce {
		return nil, fmt.Errorf("nonce is %d bytes; want %d to %d", len(nonce), MinNonce, MaxNonce)
	}
	ak, err := tpm.LoadAK(t)
	if err != nil {
		return nil, err
	}
	defer ak.Close()
	q, values, err := ak.Quote(pcrs, qualifyingData(nonce, checkpoint))
	if err != nil {
		return nil, err
	}
	return &Attestation{
		Version: Version, CustodianID: custodianID, Time: now.UTC().Truncate(time.Second),
		Nonce: nonce, PCRs: values, EventLog: eventLog, Checkpoint: checkpoint,
		Quote: *q,
	}, nil
}

// Parse decodes an attestation strictly.
func Parse(data []byte) (*Attestation, error) {
	var a Attestation
	if err := strictjson.Decode(data, &a, maxSize); err != nil {
		return nil, fmt.Errorf("attestation: %w", err)
	}
	if a.Version != Version {
		return nil, fmt.Errorf("attestation: unsupported version %d", a.Version)
	}
	if err := ids.CheckCustodian(a.CustodianID); err != nil {
		return nil, fmt.Errorf("attestation: %w", err)
	}
	return &a, nil
}

// Expect is what a verifier holds: the custodian's enrollment (already
// verified: its AK is the custodian's), the approved policy, the nonce it
// sent, and optionally the custodian's ledger verifier key.
type Expect struct {
	Enrollment *enrollment.Enrollment
	Policy     *bootpolicy.Policy
	Nonce      []byte
	LedgerKey  string // the custodian's checkpoint verifier key, named custodian/<id>
}

// Result says what was established beyond the quote itself.
type Result struct {
	LedgerSize uint64 // size of the checked checkpoint
	LogEvents  int    // events in the boot log that were checked
}

// Verify checks a against what the verifier expects.
func (a *Attestation) Verify(want Expect) (*Result, error) {
	r, err := a.verify(want)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMismatch, err)
	}
	return r, nil
}

func (a *Attestation) verify(want Expect) (*Result, error) {
	if a.CustodianID != want.Enrollment.CustodianID {
		return nil, fmt.Errorf("from %s, not the enrolled %s", a.CustodianID, want.Enrollment.CustodianID)
	}
	ak, err := tpm.ParseAKPublic(want.Enrollment.AK)
	if err != nil {
		return nil, err
	}
	if err := tpm.VerifyQuote(ak, &a.Quote, qualifyingData(want.Nonce, a.Checkpoint), a.PCRs); err != nil {
		return nil, err
	}
	if !a.PCRs.Equal(want.Policy.PCRs) {
		return nil, errors.New("the quoted PCRs are not the policy's: the device runs another image")
	}
	r := &Result{}
	if r.LogEvents, err = a.checkLog(want.Policy); err != nil {
		return nil, err
	}
	// The quote does not cover the custodian ID: only the checkpoint,
	// signed by the custodian's own ledger key, ties the attestation to
	// that custodian's ledger rather than to its TPM alone.
	if want.LedgerKey == "" {
		return nil, errors.New("no ledger key: without the custodian's checkpoint verifier key the attestation is not tied to its ledger")
	}
	cp, err := ledger.VerifyCheckpoint([]byte(a.Checkpoint), want.LedgerKey)
	if err != nil {
		return nil, err
	}
	if origin := "custodian/" + want.Enrollment.CustodianID; cp.Origin != origin {
		return nil, fmt.Errorf("the checkpoint is of %q, not of %s's ledger (%s)", cp.Origin, want.Enrollment.CustodianID, origin)
	}
	r.LedgerSize = cp.Size
	return r, nil
}

// checkLog checks the boot event log against the quoted PCRs and, for a
// predicted policy, against its events.
func (a *Attestation) checkLog(p *bootpolicy.Policy) (int, error) {
	if p.Source == "" {
		events, err := p.VerifyLog(a.EventLog, a.PCRs)
		return len(events), err
	}
	// A policy recorded from an enrollment has no events to compare; the
	// log, if any, must still explain the quoted values.
	if len(a.EventLog) == 0 {
		return 0, nil
	}
	events, err := bootpolicy.ParseLog(a.EventLog)
	if err != nil {
		return 0, err
	}
	replayed := bootpolicy.Replay(events)
	for _, i := range replayed.Indices() {
		if !bytes.Equal(replayed[i], a.PCRs[i]) {
			return 0, fmt.Errorf("the event log does not replay to quoted PCR %d", i)
		}
	}
	return len(events), nil
}
