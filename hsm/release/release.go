// Package release is the appliance's reason to exist: the state machine that
// turns a verified warrant and a court officer's button press into release
// packages, each logged in the ledger before it exists.
//
// The life of a request (Daemon.Submit):
//
//  1. Appliance checks: the ledger is not blocked (rollback, clone), the clock
//     is not behind the newest entry, the checkpoint key unsealed (the PCRs
//     are the approved image's).
//  2. The warrant verifies (package warrant) against the trust store, this
//     custodian's ID and the key IDs it holds; it was not used before (the
//     ledger's replay index), and every signature is younger than the ledger's
//     replay floor; the PCRs hold the values each named share is sealed to;
//     a scoped key ID has envelopes named, a share-mode key ID none.
//  3. One warrant awaits approval at a time: a second verified warrant is
//     refused as "busy" (not queued: the officer at the device must know which
//     warrant a press approves).
//  4. When a key ID's escrow file names witnesses, their quorum cosigns
//     the current checkpoint (at most WitnessTimeout; witnessesAnswer),
//     or the warrant is refused with witness_unreachable before anything
//     is written for the release: a release entry spends the warrant, so
//     a witness outage must be found before it. Then the summary goes to
//     the display, the LED blinks, and the button must be pressed — a
//     press that begins after the summary was shown, within the window
//     (default 120 s).
//  5. After the press, the witnesses are asked again (refused as in step
//     4), then the whole verification of steps 1–2 runs again — the
//     trust store read again from disk, CRL freshness, the warrant's
//     window, addressing and key IDs, the replay index, the PCRs and the
//     floor (asked of the TPM after the warrant verified again) — so a
//     judge revoked, a window closed or a warrant used elsewhere while
//     the device waited refuses the release ("changed_after_approval",
//     with the cause). Before each later key ID's entry the checks that
//     can change with time run again (recheckKeyID); a key ID that fails
//     then is refused alone, logged, and the earlier ones stay released.
//  6. Then, per key ID, in this order: a release entry is appended to the
//     ledger (durable, NV counter incremented; the first carries the
//     warrant's replay key and the request record, in the same
//     transaction, see record), when the key ID's escrow
//     file names witnesses with a quorum the daemon waits, at most
//     WitnessTimeout, for that quorum to cosign a checkpoint holding the
//     entry (witness_refused otherwise: a failure entry; witness_timeout:
//     the request awaits its witnesses under the entry until the officer
//     tries again, see resume.go; nothing is unsealed either way; see
//     witnessed), the share is unsealed in the
//     TPM (salted, response-encrypted session), sealed with HPKE to the
//     warrant's recipient (info binds warrant digest, custodian, key ID,
//     share index), and the package — with the entry's inclusion proof and a
//     signed checkpoint, the witnesses' cosigned one when they were waited
//     for — is written durably with the request record naming it, in one
//     transaction of the ledger's database (see record). Every new
//     checkpoint is also submitted to the held key IDs' witnesses in the
//     background (witnessLoop), so refusals are witnessed too.
//     A scoped key ID (escrow mode "scoped") releases no share: it appends
//     one release entry for the key ID (committing to the warrant and the
//     tree hash and count of its envelope list, inline or submitted
//     beside it), then the TPM computes each partial decryption and one
//     proof for all of them (computePartials, one batch per key ID, the
//     progress in the status), and the package holds the batch, sealed the
//     same way, with the entry's inclusion proof.
//
// Every entry about a request (release, refusal, failure) commits to the
// submitted signed warrant bytes under a salt kept on the appliance. Every
// refusal is a *Refusal with a stable Code. Only a request someone
// accountable stands behind — a warrant whose signatures verified against
// the trust store — gets a refusal entry of its own (e.g. not_addressed,
// expired, replayed, no_press), once per warrant and code: every entry
// consumes a TPM NV write, and nobody outside the appliance may cause one.
// Everything else (malformed or unverifiable submissions, busy, body too
// large, rate limited, the same refusal again) is counted in memory by
// code and written as one unverified entry per interval (default 6 hours,
// and at Close), only if something was counted. The ledger blocked
// (rollback, clone) refuses every append: those refusals go to the
// daemon's log. Any failure after a release entry is logged as a failure
// entry, except a witness timeout (the request awaits its witnesses). A
// request interrupted after its entries (power loss, kill -9) is finished
// at the next start: key IDs with a stored package are served; the others are logged as failed ("interrupted"). Nothing is
// released twice: the replay key is in the same ledger transaction as the
// first release entry, and a package is sealed once per entry.
package release

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/hsm/witness"
	"github.com/custodian-project/custodian/tpm"
)

// DefaultWindow is how long the officer has to press the button.
const DefaultWindow = 120 * time.Second

// Dir held request records and packages inside the data directory before
// they moved into the ledger (the old layout, still read and finished).
const Dir = "releases"

// States of a request.
const (
	StateAwaitingPress = "awaiting_press"
	StateReleasing     = "releasing"
	StateReleased      = "released"
	StateRefused       = "refused"
	StateFailed        = "failed" // some or all key IDs failed after their entry
)

// Config is what a daemon needs.
type Config struct {
	Appliance *appliance.Appliance // opened on TPM
	TPM       *SerialTPM
	Button    button.Button
	LED       gpio.PinOut // nil: no LED
	Display   io.Writer   // where the summary is shown
	Window    time.Duration
	// MaxValidity caps a warrant's not_after - not_before (0: the default).
	MaxValidity time.Duration
	Now         func() time.Time
	Log         *slog.Logger
	// TallyInterval is how often counted refusals are written as one
	// unverified entry (0: DefaultTallyInterval).
	TallyInterval time.Duration
	// Hook, when set, is called at named points of a release ("entry" after
	// a release entry is durable, "partials" after each partial the TPM
	// computes for a scoped key ID, "stored" after its package is): tests use
	// it to kill the process there.
	Hook func(stage, keyID string)
	// WitnessTimeout bounds each wait for the escrow file's witness quorum
	// to cosign: before the summary, after the press, and after the entry
	// (0: DefaultWitnessTimeout).
	WitnessTimeout time.Duration
	// WitnessHTTP reaches the witnesses (nil: a default client).
	WitnessHTTP *http.Client
}

// DefaultWitnessTimeout is how long one wait for the witnesses lasts.
const DefaultWitnessTimeout = 30 * time.Second

// Daemon runs requests. Its methods are safe for concurrent use.
type Daemon struct {
	cfg Config

	mu       sync.Mutex
	pending  *request            // awaiting press or releasing
	requests map[string]*request // recent requests, by ID
	order    []string            // IDs in arrival order, to bound requests
	closed   bool
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	ctx      context.Context
	tally    *tally
	gate     tpmGate // a release's TPM work and attestations never overlap
	cosigner *witness.Cosigner
	appended chan struct{} // wakes witnessLoop
}

// maxRemembered bounds the requests kept in memory; records of released
// requests stay on disk.
const maxRemembered = 256

// New makes a daemon and finishes requests a previous run left interrupted.
func New(cfg Config) (*Daemon, error) {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Display == nil {
		cfg.Display = io.Discard
	}
	if cfg.Hook == nil {
		cfg.Hook = func(string, string) {}
	}
	if cfg.TallyInterval <= 0 {
		cfg.TallyInterval = DefaultTallyInterval
	}
	if cfg.WitnessTimeout <= 0 {
		cfg.WitnessTimeout = DefaultWitnessTimeout
	}
	cosigner, err := witness.NewCosigner(cfg.Appliance.Dir, cfg.WitnessHTTP)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{cfg: cfg, requests: map[string]*request{}, ctx: ctx, cancel: cancel, tally: newTally(cfg.Now()), cosigner: cosigner, appended: make(chan struct{}, 1)}
	if err := d.recover(); err != nil {
		cancel()
		return nil, err
	}
	d.wg.Add(2)
	go d.tallyLoop()
	go d.witnessLoop()
	return d, nil
}

// Close stops awaiting presses (a pending request is refused as no_press
// would be, with code shutting_down), waits for a running release, and
// writes what was counted since the last unverified entry.
func (d *Daemon) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	d.writeTally(true)
}

// Status is what the API reports about a request.
type Status struct {
	ID            string    `json:"id"`
	State         string    `json:"state"`
	Summary       string    `json:"summary,omitempty"`
	WarrantDigest string    `json:"warrant_digest,omitempty"` // hex
	KeyIDs        []string  `json:"key_ids,omitempty"`
	Deadline      time.Time `json:"deadline,omitzero"`
	// Packages lists the key IDs whose package can be fetched.
	Packages []string `json:"packages,omitempty"`
	// Failed maps key IDs that failed after their entry to the code.
	Failed map[string]Code `json:"failed,omitempty"`
	Code   Code            `json:"code,omitempty"`
	// Cause is, for changed_after_approval, the code the warrant's
	// verification gave after the press.
	Cause   Code   `json:"cause,omitempty"`
	Message string `json:"message,omitempty"`
	// LedgerIndices maps key IDs to their release entries; for a refusal,
	// "" maps to the refusal entry.
	LedgerIndices map[string]int64 `json:"ledger_indices,omitempty"`
	Timings       *Timings         `json:"timings,omitempty"`
	// Progress, while a scoped key ID's partials are computed and after,
	// says how many of them exist.
	Progress *Progress `json:"progress,omitempty"`
	// Salts open the commitments of the entries in LedgerIndices. Only
	// the API fills them, for a court officer's authenticated client
	// (API.withSalts); the daemon's own status never holds them.
	Salts []opening.Salt `json:"salts,omitempty"`
}

// Timings splits a release's cost, from the press to the last package:
// the stages after VerifyMS add up to TotalMS, but for the moments
// between them.
type Timings struct {
	VerifyMS    float64 `json:"verify_ms"`    // before the summary (not after the press)
	RecheckMS   float64 `json:"recheck_ms"`   // the checks run again after the press and before later key IDs, and the TPM's room
	LedgerMS    float64 `json:"ledger_ms"`    // release entries with the request record (one journal sync + NV increment, then ledger.db's commit)
	TPMMS       float64 `json:"tpm_ms"`       // unseal
	HPKEMS      float64 `json:"hpke_ms"`      // seal to the recipient
	ProofMS     float64 `json:"proof_ms"`     // inclusion proof and signed checkpoint
	StoreMS     float64 `json:"store_ms"`     // durable package write, with the request record
	WitnessMS   float64 `json:"witness_ms"`   // waiting for the witness quorum, after the press and after the entry
	TotalMS     float64 `json:"total_ms"`     // press to last package stored
	TPMCommands int64   `json:"tpm_commands"` // during the release
}

type request struct {
	status Status
	v      *warrant.Verified
	p7s    []byte
	// detached is the envelope list submitted beside the warrant (nil:
	// none); list the warrant's envelopes, inline or detached, once checked.
	detached *warrant.EnvelopeList
	list     *warrant.EnvelopeList
	// bundles are the key IDs' bundles as last checked (PCRs, floor,
	// envelopes): the release uses what was checked, without reading it
	// again.
	bundles map[string]*escrow.Bundle
	pressed time.Time // when the press was taken: Timings.TotalMS counts from it
	// Awaiting witnesses (park): the request's record, the position of
	// the key ID awaiting them, and its release entry.
	rec      *record
	resumeAt int
	parked   int64
	done     chan struct{}
	// officer is the submitting client certificate's Fingerprint ("" on
	// an appliance without officers' certificates).
	officer string
}

func (d *Daemon) now() time.Time { return d.cfg.Now().UTC() }

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Submit runs steps 1–4 of the package contract for a signed warrant. It
// returns once the summary is shown (the request then awaits a press in the
// background), or with a *Refusal.
func (d *Daemon) Submit(p7s []byte) (*Status, error) { return d.SubmitList(p7s, nil) }

// SubmitList is Submit for a warrant with the envelope list it names by
// tree hash (warrant.ReadEnvelopeList read it); list is nil for a warrant
// that names its envelopes inline or none.
func (d *Daemon) SubmitList(p7s []byte, list *warrant.EnvelopeList) (*Status, error) {
	return d.SubmitFrom("", p7s, list)
}

// SubmitFrom is SubmitList for the officer whose client certificate has
// Fingerprint officer: only that certificate is given the request's salts
// (API.withSalts).
func (d *Daemon) SubmitFrom(officer string, p7s []byte, list *warrant.EnvelopeList) (*Status, error) {
	start := time.Now()
	bundles := map[string]*escrow.Bundle{}
	v, checked, ref := d.check(p7s, list, bundles)
	if ref != nil {
		return nil, ref
	}
	verifyTime := time.Since(start)
	// Before the summary: the officer is not asked to press for a release
	// the witnesses would hold up after its entry.
	if code, err := d.witnessesAnswer(inOrder(v.Warrant.KeyIDs, bundles)); err != nil {
		return nil, d.refuseWitnesses(p7s, code, err)
	}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, d.count(CodeShuttingDown, errShuttingDown)
	}
	if d.pending != nil {
		d.mu.Unlock()
		// The device's state, not the warrant, refuses: counted, like any
		// other refusal anyone can cause at will.
		return nil, d.count(CodeBusy, errBusy)
	}
	r := &request{v: v, p7s: p7s, detached: list, list: checked, bundles: bundles, done: make(chan struct{}), officer: officer}
	r.status = Status{
		ID:            newID(),
		State:         StateAwaitingPress,
		Summary:       warrant.SummaryWithList(v.Warrant, checked, v.Signers),
		WarrantDigest: hex.EncodeToString(v.Digest[:]),
		KeyIDs:        v.Warrant.KeyIDs,
		Deadline:      d.now().Add(d.cfg.Window).Truncate(time.Second),
		Timings:       &Timings{VerifyMS: ms(verifyTime)},
	}
	d.pending = r
	d.remember(r)
	d.wg.Add(1)
	d.mu.Unlock()

	// The summary is shown before the button is watched, so a press in
	// between is taken for one that began before the summary (refused, the
	// safe side); Submit answers only once the button is watched, so a
	// client that prompts the officer never prompts too early.
	d.show(r)
	ready := make(chan struct{})
	go d.await(r, func() { close(ready) })
	select {
	case <-ready:
	case <-r.done:
	}
	st := d.snapshot(r)
	return &st, nil
}

// check runs every refusal before the summary, and logs or counts it. The
// bundles checked go into keep.
func (d *Daemon) check(p7s []byte, detached *warrant.EnvelopeList, keep map[string]*escrow.Bundle) (*warrant.Verified, *warrant.EnvelopeList, *Refusal) {
	v, list, signed, code, err := d.vet(p7s, detached, true, keep, tpmState{d.cfg.TPM})
	switch {
	case err == nil:
		return v, list, nil
	case code == CodeBusy || code == CodeShuttingDown:
		return nil, nil, d.count(code, err)
	case errors.Is(err, ledger.ErrBlocked):
		// The ledger refuses every append: this refusal goes to the log only.
		d.cfg.Log.Warn("refused", "code", code, "err", err)
		return nil, nil, &Refusal{Code: code, Err: err, LedgerIndex: -1}
	case signed:
		return nil, nil, d.refuse(p7s, code, err)
	}
	return nil, nil, d.count(code, err)
}

// vet runs every check of steps 1–2 (for a fresh submission, also step 3's
// busy, before the envelopes are checked), logging nothing, and returns the
// verified warrant with its envelopes as one checked list (nil: none).
// signed reports whether someone accountable stands behind the warrant —
// its signatures verified against the trust store — whatever refused it
// then. The bundles checked go into keep, unless it is nil. state
// answers what is asked of the TPM's state.
func (d *Daemon) vet(p7s []byte, detached *warrant.EnvelopeList, fresh bool, keep map[string]*escrow.Bundle, state tpmState) (v *warrant.Verified, list *warrant.EnvelopeList, signed bool, code Code, err error) {
	a := d.cfg.Appliance
	if err := a.Ledger.Blocked(); err != nil {
		if errors.Is(a.SignerErr, tpm.ErrDowngrade) {
			// The state cannot be checked because this image is older than
			// the TPM's floor: say so, rather than "not approved".
			return nil, nil, false, CodeDowngrade, fmt.Errorf("%w: the ledger key does not open: %w", ledger.ErrBlocked, a.SignerErr)
		}
		return nil, nil, false, codeOf(err), err
	}
	now := d.now()
	// The appliance's own state refuses first, but the warrant is still
	// verified, so that the refusal is logged or counted as the warrant
	// deserves.
	stateCode, stateErr := d.applianceState(now)
	v, signed, code, err = d.verify(p7s, now, -1)
	switch {
	case stateErr != nil:
		return nil, nil, signed, stateCode, stateErr
	case err != nil:
		return nil, nil, signed, code, err
	case fresh && d.isClosed():
		return nil, nil, signed, CodeShuttingDown, errShuttingDown
	case fresh && d.busy():
		// Before the list is matched, every seal proof checked and the
		// witnesses asked: a warrant resubmitted while one awaits
		// approval costs no more, and waits on nothing.
		return nil, nil, signed, CodeBusy, errBusy
	}
	// The list is the warrant's (tree hash, count, key IDs, targets)
	// before anything else is asked of it, and, for a submission, before
	// the TPM is.
	if list, err = v.Warrant.List(detached); err != nil {
		return nil, nil, true, codeOf(err), err
	}
	if code, err := d.checkBundles(v.Warrant, list, keep, state); err != nil {
		return nil, nil, true, code, err
	}
	return v, list, true, "", nil
}

var errBusy = errors.New("another warrant awaits approval on this custodian; try again when it is released or refused")

// busy reports whether a warrant awaits approval or is being released.
var errShuttingDown = errors.New("the appliance is shutting down")

// isClosed reports whether the daemon takes no more submissions.
func (d *Daemon) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

func (d *Daemon) busy() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pending != nil
}

// applianceState refuses when the appliance's own state forbids a release
// now: the clock behind the ledger, or the ledger key not opening.
func (d *Daemon) applianceState(now time.Time) (Code, error) {
	a := d.cfg.Appliance
	if err := a.Ledger.CheckClock(now); err != nil {
		return CodeClockBehind, fmt.Errorf("%w; set the clock (the RTC) and try again", err)
	}
	switch {
	case errors.Is(a.SignerErr, tpm.ErrDowngrade):
		return CodeDowngrade, fmt.Errorf("the ledger key does not open: %w", a.SignerErr)
	case a.SignerErr != nil:
		return CodeImageNotApproved, fmt.Errorf("the ledger key does not unseal: this is not the approved image (%v)", a.SignerErr)
	}
	return "", nil
}

// verify verifies the warrant as of now against the trust store read from
// disk, this custodian's ID and held key IDs, the replay floor and the
// replay index: its replay key unused, or (own >= 0, a later key ID of a
// request under way) registered by the request's own first entry own.
// signed is as for vet.
func (d *Daemon) verify(p7s []byte, now time.Time, own int64) (v *warrant.Verified, signed bool, code Code, err error) {
	a := d.cfg.Appliance
	held, err := a.KeyIDs()
	if err != nil {
		return nil, false, CodeInternal, err
	}
	store, err := trust.Open(filepath.Join(a.Dir, "trust"))
	if err != nil {
		return nil, false, CodeInternal, fmt.Errorf("trust store: %w", err)
	}
	verifier := &warrant.Verifier{Trust: store, CustodianID: a.ID, HeldKeyIDs: held,
		Now: func() time.Time { return now }, MaxValidity: d.cfg.MaxValidity}
	v, err = verifier.Verify(p7s)
	if err != nil {
		code := codeOf(err)
		return nil, signaturesVerified(code), code, err
	}
	if code, err := CheckFloor(v.Signers, a.Ledger.ReplayFloor()); err != nil {
		return nil, true, code, err
	}
	if i, seen, err := a.Ledger.Seen([]byte(v.Replay.String())); err != nil {
		return nil, true, CodeInternal, err
	} else if seen && i != own {
		// The entry that used it is the court's own: its index goes to the
		// daemon's log only, never to whoever holds a copy of the warrant
		// (docs/threat-model.md, "Salts").
		d.cfg.Log.Debug("replayed", "replay", v.Replay.String(), "used_by_entry", i)
		return nil, true, CodeReplayed, fmt.Errorf("warrant %s was already used on this custodian", v.Replay)
	}
	return v, true, "", nil
}

// CheckFloor refuses a warrant signed before the ledger's replay floor
// (set when the ledger was created or a rollback resolved): the replay
// index may have lost the warrants used before it, so only signatures
// made after it prove a warrant new to this ledger. custodian warrant
// verify checks the same on a device.
func CheckFloor(signers []warrant.Identity, floor time.Time) (Code, error) {
	for _, s := range signers {
		if s.SigningTime.Before(floor) {
			return CodeBeforeFloor, fmt.Errorf("signed at %s, before this ledger's replay floor %s (ledger created or rollback resolved): ask the court for a fresh signature",
				s.SigningTime.UTC().Format(time.RFC3339), floor.UTC().Format(time.RFC3339))
		}
	}
	return "", nil
}

// signaturesVerified reports whether a warrant refusal comes after its
// signatures verified: the checks of where and when a verified warrant
// may be used. Any other refusal, including a reason added later, is
// treated as unverified: counted, never logged alone.
func signaturesVerified(code Code) bool {
	switch warrant.Reason(code) {
	case warrant.ReasonNotYetValid, warrant.ReasonExpired, warrant.ReasonNotAddressed, warrant.ReasonUnknownKeyID:
		return true
	}
	return false
}

// checkBundles refuses before the summary when a release could not
// happen: a share that could not open (the officer must not approve a
// release the TPM will refuse), or a warrant whose envelopes do not fit
// the key IDs' modes — a scoped key ID releases only the envelopes the
// warrant names, so it needs at least one; a share-mode key ID releases
// the whole share, so naming envelopes for it would misstate the release —
// or an envelope without its sealer's valid proof. The envelopes are all
// checked before the TPM's answers are taken.
func (d *Daemon) checkBundles(w *warrant.Warrant, list *warrant.EnvelopeList, keep map[string]*escrow.Bundle, state tpmState) (Code, error) {
	bundles := make([]*escrow.Bundle, 0, len(w.KeyIDs))
	for _, k := range w.KeyIDs {
		b, err := d.cfg.Appliance.Bundle(k)
		if err != nil {
			return CodeNoShare, err
		}
		if code, err := CheckEnvelopes(list, b); err != nil {
			return code, err
		}
		bundles = append(bundles, b)
	}
	for _, b := range bundles {
		if code, err := checkOpens(state, b); err != nil {
			return code, err
		}
	}
	if keep != nil {
		for _, b := range bundles {
			keep[b.Escrow.KeyID] = b
		}
	}
	return "", nil
}

// checkOpens refuses a share the TPM (its state as state answers) would
// not open now: the PCRs are not the ones it is sealed to, or the version
// floor rose above its image.
func checkOpens(state tpmState, b *escrow.Bundle) (Code, error) {
	now, err := state.pcrs(b.Escrow.PCRs.Indices())
	if err != nil {
		return CodeInternal, fmt.Errorf("reading PCRs: %w", err)
	}
	if !now.Equal(b.Escrow.PCRs) {
		return CodePCRMismatch, fmt.Errorf("%w (key ID %s): the device did not boot the approved image", tpm.ErrPCRMismatch, b.Escrow.KeyID)
	}
	if err := belowFloor(state, b); err != nil {
		return CodeDowngrade, fmt.Errorf("key ID %s: %w", b.Escrow.KeyID, err)
	}
	return "", nil
}

// CheckEnvelopes checks the envelopes a warrant names for b's key ID,
// inline or by a list: the one place where envelopes are checked, before
// the summary and again after the press, and by custodian warrant verify
// on a device (it reads b without the TPM). Each must
// carry its sealer's proof of knowledge of its ephemeral key, for its key
// ID, target and ciphertext: without it, a requester could name another
// envelope's key in disguise (α·R, R + β·G, or R under another label) and
// undo the disguise on the partials.
func CheckEnvelopes(list *warrant.EnvelopeList, b *escrow.Bundle) (Code, error) {
	k := b.Escrow.KeyID
	var named []warrant.EnvelopeRef
	if list != nil {
		named = list.For(k)
	}
	switch {
	case b.Escrow.Mode == escrow.ModeScoped && len(named) == 0:
		return CodeNoEnvelopes, fmt.Errorf("key ID %s is scoped: the warrant must name the envelopes it covers", k)
	case b.Escrow.Mode != escrow.ModeScoped && len(named) > 0:
		return CodeNotScoped, fmt.Errorf("key ID %s is in share mode: a release would open every envelope, not only the %d named", k, len(named))
	}
	// Version 3 proofs are checked together (one random linear
	// combination per CPU), version 2 ones each alone; a failure names its
	// envelope.
	if i, err := escrow.FirstFailure(escrow.CheckSealProofs(named)); err != nil {
		return CodeUnprovenEnvelope, fmt.Errorf("envelope %d of key ID %s (target %q): %w", i+1, k, named[i].Target, err)
	}
	return "", nil
}

// refuse logs a refusal entry committing to the submitted bytes, for a
// warrant someone accountable signed. The same warrant refused again for
// the same code is counted instead: resubmitting a copy costs no NV write.
func (d *Daemon) refuse(p7s []byte, code Code, err error) *Refusal {
	if !d.tally.firstTime(p7s, code) {
		return d.count(code, fmt.Errorf("%w (refused before for the same reason; counted)", err))
	}
	index, lerr := d.logRefusal(p7s, code, "")
	if lerr != nil {
		d.cfg.Log.Error("refusal not logged", "code", code, "err", lerr)
	}
	d.cfg.Log.Info("refused", "code", code, "err", err, "ledger_index", index)
	return &Refusal{Code: code, Err: err, LedgerIndex: index}
}

func (d *Daemon) logRefusal(subject []byte, code Code, keyID string) (int64, error) {
	return d.appendEntry(ledger.KindRefusal, ledger.OutcomeRefused, code, keyID, subject, nil)
}

func (d *Daemon) appendEntry(kind ledger.Kind, outcome string, code Code, keyID string, subject, replay []byte) (int64, error) {
	return d.appendEntryNoted(kind, outcome, code, keyID, subject, replay, nil)
}

// appendEntryNoted is appendEntry with the notes notes returns for the
// entry's index written in the entry's transaction (nil: none). An entry
// stored but not counted (ledger.ErrUncounted) returns its index with the
// error; any other error, -1.
func (d *Daemon) appendEntryNoted(kind ledger.Kind, outcome string, code Code, keyID string, subject, replay []byte, notes func(int64) ([]ledger.Note, error)) (int64, error) {
	l := d.cfg.Appliance.Ledger
	if subject == nil {
		subject = []byte{}
	}
	e := ledger.Entry{Time: d.stamp(), Kind: kind, Outcome: outcome, Reason: string(code), KeyID: keyID}
	if outcome == ledger.OutcomeOK {
		e.Reason = ""
	}
	var i int64
	var err error
	if notes == nil {
		i, err = l.Append(e, subject, replay)
	} else {
		i, err = l.AppendNoted(e, subject, replay, notes)
	}
	if errors.Is(err, ledger.ErrUncounted) {
		return i, err // the entry stands: its caller accounts for it
	}
	if err != nil {
		return -1, err
	}
	d.noteAppended()
	return i, nil
}

// stamp is the time of a new entry: now, or, on a clock behind the ledger,
// the newest entry's time, the earliest time the ledger allows (a refusal
// for that very reason must still be logged). The newest time is the one
// the ledger checked at Open and binds, never an entry read back alone.
func (d *Daemon) stamp() time.Time {
	t := d.now().Truncate(time.Second)
	if newest := d.cfg.Appliance.Ledger.Newest(); t.Before(newest) {
		t = newest
	}
	return t
}

func (d *Daemon) show(r *request) {
	fmt.Fprintf(d.cfg.Display, "\n==== WARRANT AWAITING APPROVAL (request %s) ====\n%s\nwarrant digest: %s…\npress the button before %s to release; do nothing to refuse\n",
		r.status.ID[:8], r.status.Summary, r.status.WarrantDigest[:16], r.status.Deadline.Format(time.RFC3339))
}

// await waits for the press and runs the release.
func (d *Daemon) await(r *request, ready func()) {
	defer d.wg.Done()
	defer close(r.done)
	ctx, stop := context.WithCancel(d.ctx)
	if d.cfg.LED != nil {
		go button.Blink(ctx, d.cfg.LED, 250*time.Millisecond)
	}
	err := d.cfg.Button.Await(ctx, d.cfg.Window, ready)
	stop()
	if err != nil {
		code := CodeNoPress
		switch {
		case errors.Is(err, button.ErrHeld):
			code = CodeButtonHeld
		case d.ctx.Err() != nil:
			code = CodeShuttingDown
			err = errors.New("the appliance is shutting down before the button was pressed; nothing was released: submit the warrant again when it is back")
		}
		d.refused(r, code, "", err)
		return
	}
	// The witnesses again, as they may have gone since the summary; before
	// the whole verification runs again, so that it stays the last check
	// before the entry.
	r.pressed = time.Now()
	code, err := d.witnessesAnswer(inOrder(r.status.KeyIDs, r.bundles))
	d.update(r, func(s *Status) { s.Timings.WitnessMS += ms(time.Since(r.pressed)) })
	if err != nil {
		d.refused(r, code, "", err)
		return
	}
	unlock := d.gate.release()
	defer unlock()
	t0 := time.Now()
	state := tpmState{d.cfg.TPM}
	cause, err := d.recheck(r, state)
	var full error
	if err == nil {
		full = state.room()
	}
	d.update(r, func(s *Status) { s.Timings.RecheckMS += ms(time.Since(t0)) })
	if err != nil {
		d.refused(r, CodeChangedAfterApproval, cause, err)
		return
	}
	if err := full; err != nil {
		// Before any entry: a restart costs nothing here.
		code := roomRefusal(err)
		if code == CodeTPMFull {
			err = fmt.Errorf("%w (restart the appliance: a power cycle empties them)", err)
		}
		d.refused(r, code, "", fmt.Errorf("%w; nothing was released and the warrant can be submitted again", err))
		return
	}
	d.update(r, func(s *Status) { s.State = StateReleasing })
	d.releaseAll(r)
}

// recheck runs the whole verification again right before the first
// release entry: the warrant approved minutes ago must still verify now
// (trust store read again, CRL fresh, not revoked, window open, addressed
// here, key IDs held, replay key unused, PCRs, floor), the TPM's state
// answered by state. It returns the code that refused it.
func (d *Daemon) recheck(r *request, state tpmState) (Code, error) {
	bundles := map[string]*escrow.Bundle{}
	v, list, _, code, err := d.vet(r.p7s, r.detached, false, bundles, state)
	if err != nil {
		return code, fmt.Errorf("the warrant no longer verifies after the press (%s): %w; nothing was released", code, err)
	}
	r.v, r.list, r.bundles = v, list, bundles
	return "", nil
}

// recheckKeyID runs again, right before a later key ID's release entry,
// the checks whose outcome can change with time: the appliance's state
// (clock, ledger key), the warrant against the trust store read again
// (CRL fresh, signer not revoked, window open, addressed here, key ID
// held; its replay key registered by the request's own first entry), and
// whether the TPM would open keyID's share (PCRs, floor). A scoped release
// of a long list takes hours on a Pi's TPM: the warrant approved at the
// press may have expired, or its judge been revoked, before the next key
// ID. The envelope list and its seal proofs cannot change and are not
// checked again.
func (d *Daemon) recheckKeyID(r *request, keyID string, first int64) (Code, error) {
	fail := func(code Code, err error) (Code, error) {
		return code, fmt.Errorf("the warrant no longer verifies for key ID %s (%s): %w; it was not released", keyID, code, err)
	}
	if err := d.cfg.Appliance.Ledger.Blocked(); err != nil {
		return fail(codeOf(err), err)
	}
	now := d.now()
	if code, err := d.applianceState(now); err != nil {
		return fail(code, err)
	}
	if _, _, code, err := d.verify(r.p7s, now, first); err != nil {
		return fail(code, err)
	}
	b, err := d.cfg.Appliance.Bundle(keyID)
	if err != nil {
		return fail(CodeNoShare, err)
	}
	if code, err := checkOpens(tpmState{d.cfg.TPM}, b); err != nil {
		return fail(code, err)
	}
	r.bundles[keyID] = b
	return "", nil
}

// refused ends a request that awaited the press with a logged refusal.
func (d *Daemon) refused(r *request, code, cause Code, err error) {
	ref := d.refuse(r.p7s, code, err)
	fmt.Fprintf(d.cfg.Display, "request %s refused: %s\n", r.status.ID[:8], code)
	d.finish(r, func(s *Status) {
		s.State, s.Code, s.Cause, s.Message = StateRefused, code, cause, err.Error()
		s.LedgerIndices = map[string]int64{"": ref.LedgerIndex}
	})
}

func (d *Daemon) update(r *request, f func(*Status)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(&r.status)
}

// finish records the final state and frees the approval slot.
func (d *Daemon) finish(r *request, f func(*Status)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(&r.status)
	if d.pending == r {
		d.pending = nil
	}
	// Remembered requests keep only their status, not the warrant.
	r.v, r.p7s, r.detached, r.list, r.bundles, r.rec = nil, nil, nil, nil, nil, nil
}

// remember keeps r's status for Status and Wait, forgetting the oldest
// finished requests past maxRemembered. The pending request and the
// parked ones (awaiting their witnesses, which a resume still needs) are
// skipped, not evicted, so they never hold the others in memory: only
// they can exceed the bound, and each of them took a press and a release
// entry.
func (d *Daemon) remember(r *request) {
	d.requests[r.status.ID] = r
	d.order = append(d.order, r.status.ID)
	for i := 0; len(d.order) > maxRemembered && i < len(d.order); {
		id := d.order[i]
		if o := d.requests[id]; o == d.pending || o == r || o.status.State == StateAwaitingWitnesses {
			i++
			continue
		}
		delete(d.requests, id)
		d.order = slices.Delete(d.order, i, i+1)
	}
}

func (d *Daemon) snapshot(r *request) Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copyStatus(r.status)
}

func copyStatus(s Status) Status {
	c := s
	c.Packages = append([]string(nil), s.Packages...)
	if s.Failed != nil {
		c.Failed = map[string]Code{}
		for k, v := range s.Failed {
			c.Failed[k] = v
		}
	}
	if s.LedgerIndices != nil {
		c.LedgerIndices = map[string]int64{}
		for k, v := range s.LedgerIndices {
			c.LedgerIndices[k] = v
		}
	}
	if s.Timings != nil {
		t := *s.Timings
		c.Timings = &t
	}
	if s.Progress != nil {
		p := *s.Progress
		c.Progress = &p
	}
	return c
}

// Status returns the state of a request: from memory, or from its record on
// disk for a release made before the last restart.
func (d *Daemon) Status(id string) (*Status, error) {
	if !ValidID(id) {
		return nil, &Refusal{Code: CodeNotFound, Err: errors.New("no such request"), LedgerIndex: -1}
	}
	d.mu.Lock()
	r, ok := d.requests[id]
	d.mu.Unlock()
	if ok {
		s := d.snapshot(r)
		return &s, nil
	}
	rec, err := d.readRecord(id)
	if err != nil {
		return nil, &Refusal{Code: CodeNotFound, Err: errors.New("no such request"), LedgerIndex: -1}
	}
	s := rec.status()
	return &s, nil
}

// Submitter is the Fingerprint of the client certificate that submitted
// request id, from memory or its record; "" when unknown (no officers'
// certificates, or a record written before it was kept).
func (d *Daemon) Submitter(id string) string {
	if !ValidID(id) { // a network ID: never a path outside Dir
		return ""
	}
	d.mu.Lock()
	r, ok := d.requests[id]
	d.mu.Unlock()
	if ok {
		return r.officer // set once, before the request is remembered
	}
	if rec, err := d.readRecord(id); err == nil {
		return rec.Officer
	}
	return ""
}

// Wait blocks until the request leaves the approval and release steps, or
// ctx ends, and returns its status.
func (d *Daemon) Wait(ctx context.Context, id string) (*Status, error) {
	d.mu.Lock()
	r, ok := d.requests[id]
	var done chan struct{}
	if ok {
		done = r.done // a resumed request has a new one
	}
	d.mu.Unlock()
	if ok {
		select {
		case <-done:
		case <-ctx.Done():
		}
	}
	return d.Status(id)
}

// Package returns the stored release package of a request for keyID. The
// same bytes are returned each time: fetching again hands out no new
// release (see docs/api.md).
func (d *Daemon) Package(id, keyID string) ([]byte, error) {
	if !ValidID(id) {
		return nil, &Refusal{Code: CodeNotFound, Err: errors.New("no such request"), LedgerIndex: -1}
	}
	// Only a package the request's record names: one planted beside it
	// offline, for a key ID that failed, is not the request's.
	rec, err := d.readRecord(id)
	var data []byte
	switch {
	case err != nil || !slices.Contains(rec.Packages, keyID):
		err = errors.New("not named by its record")
	case rec.legacy:
		data, err = durable.ReadRegular(d.packagePath(id, keyID), escrow.MaxReleaseSize)
	default:
		data, err = d.cfg.Appliance.Ledger.GetNote(packageKey(id, keyID), escrow.MaxReleaseSize)
	}
	if err != nil {
		return nil, &Refusal{Code: CodeNotFound, Err: fmt.Errorf("no package for key ID %q in request %s", keyID, id), LedgerIndex: -1}
	}
	return data, nil
}

// ValidID reports whether id has a request ID's shape, 32 hexadecimal
// digits: anything else names no request, and never a path.
func ValidID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// salt is the hex salt of entry i, or "" when it has none (a negative
// index, or an entry the ledger cannot read).
func (d *Daemon) salt(i int64) string {
	if i < 0 {
		return ""
	}
	s, err := d.cfg.Appliance.Ledger.Salt(i)
	if err != nil {
		return ""
	}
	return opening.EncodeSalt(s)
}
