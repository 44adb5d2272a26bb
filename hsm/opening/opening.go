// Package opening lets a court show, after the fact, which warrant a
// ledger entry was about, and lets anyone check what it shows.
//
// Every ledger entry about a request (release, refusal, failure) commits
// to the submitted signed warrant under a 32-byte salt: SHA-256(salt ‖
// subject) ([ledger.Commit]). The appliance gives the salts of a
// request's own entries to the court officer's authenticated client only,
// with the request's result ([Salt], docs/api.md); the court keeps them in
// a salts file ([SaltsFile]). When the court decides a warrant's sealing
// is over, it publishes an [Opening]: the entry with its inclusion proof
// and signed checkpoint, the salt, and the signed warrant (with the
// envelope list's digest for a scoped release).
//
// [Check] is the one place an opening is judged, for `custodian ledger
// verify-opening` and for reports ([CheckFile] parses and checks a file in
// one call; neither changes its arguments). It accepts an opening only if:
//
//   - the checkpoint verifies under the appliance's pinned verifier key
//     and the entry is in the tree it signs ([ErrNotInLedger]);
//   - the entry is one that commits to a warrant (release, refusal,
//     failure) ([ErrNoWarrantEntry]);
//   - Commit(salt, subject) is the entry's commitment ([ErrNotOpened]: a
//     wrong salt, or a subject the entry did not commit to; the two cannot
//     be told apart, by design of the commitment);
//   - the subject is a signed warrant ([ErrNotWarrant]) that names this
//     custodian and the entry's key ID ([ErrSubjectMismatch]), except that
//     a refusal entry's warrant need not name this custodian (a warrant
//     addressed elsewhere is itself refused, not_addressed);
//   - with court roots given, the warrant verifies against them as of the
//     entry's time: signatures, chain to the root of the court it names,
//     revocation by a CRL in force then, approval policy
//     ([ErrCourtUnverified]). Without roots, only the signatures against
//     the certificates the warrant carries are checked, and [Opened] says
//     the court was not checked.
//
// Nothing here talks to an appliance: an opening stands alone with the
// pinned verifier key.
package opening

import (
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// Version is the opening format's version.
const Version = 1

// MaxSize caps an opening file: a warrant of at most 64 KiB in base64, an
// entry, a proof and a checkpoint.
const MaxSize = 128 << 10

// maxProof is the longest inclusion proof of any tree of at most 2^63
// entries.
const maxProof = 63

// SaltSize is the size of a commitment's salt.
const SaltSize = 32

// Opening is what a court publishes to open one ledger entry.
type Opening struct {
	Version int `json:"version"`
	// Index, Entry, Proof and Checkpoint are the entry with its inclusion
	// proof and the signed checkpoint the proof is for, as `custodian
	// ledger prove` gives them.
	Index      int64       `json:"index"`
	Entry      string      `json:"entry"`
	Proof      []tlog.Hash `json:"proof"`
	Checkpoint string      `json:"checkpoint"`
	// Salt is the commitment's salt, hex.
	Salt string `json:"salt"`
	// Warrant is the signed warrant (DER CMS) the entry committed to.
	Warrant []byte `json:"warrant"`
	// EnvelopeList is, for a scoped release entry, the count and tree
	// hash of the warrant's envelope list the entry committed to besides
	// the warrant (docs/ledger.md); nil otherwise.
	EnvelopeList *warrant.ListDigest `json:"envelope_list,omitempty"`
}

// Errors a caller acts on. Every refusal of Check wraps one of them.
var (
	ErrMalformed       = errors.New("the opening is malformed")
	ErrNotInLedger     = errors.New("the opened entry is not in the appliance's ledger")
	ErrNoWarrantEntry  = errors.New("the opened entry commits to no warrant")
	ErrNotOpened       = errors.New("the salt and warrant do not open the entry's commitment")
	ErrNotWarrant      = errors.New("the opened subject is not a signed warrant")
	ErrSubjectMismatch = errors.New("the opened warrant is not one this entry can be about")
	ErrCourtUnverified = errors.New("the opened warrant does not verify against the court's roots")
)

// New assembles the opening of the entry inc proves. It checks nothing:
// the caller runs Check before publishing it.
func New(inc *ledger.Inclusion, salt, p7s []byte, list *warrant.ListDigest) *Opening {
	return &Opening{Version: Version, Index: inc.Index, Entry: inc.Entry, Proof: inc.Proof,
		Checkpoint: inc.Checkpoint, Salt: hex.EncodeToString(salt), Warrant: p7s, EnvelopeList: list}
}

// Parse decodes an opening file strictly (strictjson: exact field names,
// no duplicates, nothing unknown, at most MaxSize bytes) and checks its
// shape; Check judges its contents.
func Parse(data []byte) (*Opening, error) {
	var o Opening
	if err := strictjson.Decode(data, &o, MaxSize); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := o.checkShape(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &o, nil
}

func (o *Opening) checkShape() error {
	switch {
	case o.Version != Version:
		return fmt.Errorf("version %d; this custodian reads version %d", o.Version, Version)
	case o.Index < 0:
		return errors.New("a negative entry index")
	case len(o.Proof) > maxProof:
		return fmt.Errorf("a proof of %d hashes; no tree needs more than %d", len(o.Proof), maxProof)
	case len(o.Warrant) == 0:
		return errors.New("no warrant")
	case o.EnvelopeList != nil && (o.EnvelopeList.Count < 1 || len(o.EnvelopeList.TreeHash) != tlog.HashSize):
		return errors.New("the envelope list needs a count of at least 1 and a 32-byte tree hash")
	}
	_, err := decodeSalt(o.Salt)
	return err
}

func decodeSalt(s string) ([]byte, error) {
	salt, err := hex.DecodeString(s)
	if err != nil || len(salt) != SaltSize || s != strings.ToLower(s) {
		return nil, fmt.Errorf("the salt must be %d bytes in lowercase hex", SaltSize)
	}
	return salt, nil
}

// Marshal encodes the opening as indented JSON.
func (o *Opening) Marshal() ([]byte, error) {
	data, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// Subject is what an entry about p7s commits to: the signed warrant's
// bytes, followed for a scoped release entry by 0x00 "envelope-list" 0x00,
// the list's tree hash and its count (8 bytes, big-endian).
func Subject(p7s []byte, list *warrant.ListDigest) []byte {
	if list == nil {
		return p7s
	}
	b := append(append([]byte{}, p7s...), "\x00envelope-list\x00"...)
	b = append(b, list.TreeHash...)
	return binary.BigEndian.AppendUint64(b, uint64(list.Count))
}

// Opened is what a checked opening shows.
type Opened struct {
	Origin   string // the appliance's log, "custodian/<ID>"
	TreeSize int64  // the size of the tree the checkpoint signs
	Index    int64
	Entry    *ledger.Entry
	Warrant  *warrant.Warrant
	Signers  []warrant.Identity
	// EnvelopeList is the list digest a scoped release entry committed to.
	EnvelopeList *warrant.ListDigest
	// CourtVerified reports whether the warrant verified against court
	// roots given to Check; false means only its signatures were checked
	// against the certificates it carries.
	CourtVerified bool
}

// CheckFile is Parse then Check: what a report calls for each opening
// file it is given, with the appliance's pinned verifier key and, to vouch
// for the courts, their roots and CRLs (nil: signatures only).
func CheckFile(data []byte, verifierKey string, courts *trust.Store) (*Opened, error) {
	o, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return Check(o, verifierKey, courts)
}

// Custodian is the appliance's ID, from its log's origin.
func (o *Opened) Custodian() string { return strings.TrimPrefix(o.Origin, "custodian/") }

// Check judges an opening against the appliance's pinned verifier key
// (the one line of its ledger-key.pub) and, when courts is not nil, the
// court roots and CRLs to verify the warrant against. See the package
// documentation for what it accepts.
func Check(o *Opening, verifierKey string, courts *trust.Store) (*Opened, error) {
	if err := o.checkShape(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	out, err := checkEntry(o, verifierKey)
	if err != nil {
		return nil, err
	}
	salt, _ := decodeSalt(o.Salt) // checkShape checked it
	e := out.Entry
	if subtle.ConstantTimeCompare(e.Commitment, ledger.Commit(salt, Subject(o.Warrant, o.EnvelopeList))) != 1 {
		return nil, fmt.Errorf("%w: entry %d of %s committed to another salt or another warrant%s", ErrNotOpened, o.Index, out.Origin, listNote(o, e.Kind))
	}
	w, signers, err := warrant.Inspect(o.Warrant)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotWarrant, err)
	}
	out.Warrant, out.Signers, out.EnvelopeList = w, signers, o.EnvelopeList
	if err := checkNames(out); err != nil {
		return nil, err
	}
	if courts != nil {
		if err := checkCourt(o.Warrant, e, courts); err != nil {
			return nil, err
		}
		out.CourtVerified = true
	}
	return out, nil
}

// listNote is the hint for a release entry opened without a list; a
// refusal or failure entry never commits to one.
func listNote(o *Opening, kind ledger.Kind) string {
	if o.EnvelopeList == nil && kind == ledger.KindRelease {
		return " (a scoped release entry commits to the envelope list too: give it)"
	}
	return ""
}

// checkEntry verifies the checkpoint and the entry's inclusion, and that
// the entry commits to a warrant.
func checkEntry(o *Opening, verifierKey string) (*Opened, error) {
	cp, err := ledger.VerifyCheckpoint([]byte(o.Checkpoint), verifierKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotInLedger, err)
	}
	if o.Index >= int64(cp.Size) {
		return nil, fmt.Errorf("%w: entry %d is past the checkpoint's %d entries", ErrNotInLedger, o.Index, cp.Size)
	}
	if err := ledger.VerifyInclusion(cp, o.Index, []byte(o.Entry), o.Proof); err != nil {
		return nil, fmt.Errorf("%w: the entry and its proof are not entry %d of the tree the checkpoint of %s signs", ErrNotInLedger, o.Index, cp.Origin)
	}
	e, err := ledger.ParseEntry([]byte(o.Entry))
	if err != nil { // in the tree, and not an entry this package reads
		return nil, fmt.Errorf("%w: entry %d does not parse: %w", ErrNoWarrantEntry, o.Index, err)
	}
	switch e.Kind {
	case ledger.KindRelease, ledger.KindRefusal, ledger.KindFailure:
	default:
		return nil, fmt.Errorf("%w: entry %d is a %s entry", ErrNoWarrantEntry, o.Index, e.Kind)
	}
	if e.Commitment == nil {
		return nil, fmt.Errorf("%w: entry %d has no commitment", ErrNoWarrantEntry, o.Index)
	}
	if o.EnvelopeList != nil && e.Kind != ledger.KindRelease {
		return nil, fmt.Errorf("%w: only a release entry commits to an envelope list; entry %d is a %s entry", ErrSubjectMismatch, o.Index, e.Kind)
	}
	return &Opened{Origin: cp.Origin, TreeSize: int64(cp.Size), Index: o.Index, Entry: e}, nil
}

// checkNames refuses a warrant the entry cannot be about: one that does not
// address this custodian, or, for an entry with a key ID, does not name it.
// The appliance never writes such an entry; one that did is worth telling.
func checkNames(out *Opened) error {
	w, id, k := out.Warrant, out.Custodian(), out.Entry.KeyID
	if !slices.Contains(w.Custodians, id) && out.Entry.Kind != ledger.KindRefusal {
		return fmt.Errorf("%w: it does not name custodian %q", ErrSubjectMismatch, id)
	}
	if k != "" && !slices.Contains(w.KeyIDs, k) {
		return fmt.Errorf("%w: it does not name key ID %s of entry %d", ErrSubjectMismatch, k, out.Index)
	}
	return nil
}

// checkCourt verifies the warrant against courts as of the entry's time,
// when the appliance acted on it. A refusal entry for the warrant's
// window (not yet valid, expired) records exactly that failure, and a
// failure entry, or a refusal for an interruption, may be written after
// the window closed (a restart logs the requests it stopped in): for
// those the window is no reason to refuse the opening; every other check
// still holds.
func checkCourt(p7s []byte, e *ledger.Entry, courts *trust.Store) error {
	v := &warrant.Verifier{Trust: courts, Now: func() time.Time { return e.Time }}
	_, err := v.VerifySignatures(p7s)
	if err == nil {
		return nil
	}
	r := warrant.ReasonOf(err)
	window := r == warrant.ReasonExpired || r == warrant.ReasonNotYetValid
	loggedLater := e.Kind == ledger.KindFailure || e.Kind == ledger.KindRefusal && e.Reason == ledger.ReasonInterrupted
	if window && (loggedLater || e.Kind == ledger.KindRefusal && string(r) == e.Reason) {
		return nil
	}
	return fmt.Errorf("%w as of the entry's time %s: %w", ErrCourtUnverified, e.Time.Format(time.RFC3339), err)
}
