// Package report turns the public ledgers of one or more appliances into a
// transparency report: a static HTML page with SVG charts, and the same
// figures as JSON and CSV.
//
// Contract:
//
//   - Only what a ledger makes public is counted: each entry's time, kind,
//     outcome, reason, key ID and an unverified entry's tally, and each
//     log's origin and signed checkpoint. Commitments stay closed: the
//     report never prints one, and figures that only an opened commitment
//     holds (envelopes per warrant, warrants per court) are named on the
//     page as not public ([Report.NotPublic]). Entries a court has opened
//     have their own section ([Report.Opened]): what the caller's checked
//     opening shows of the warrant (court, docket, serial, signers).
//
//   - The caller verifies. [Builder.AddLog] and [Builder.Add] take entries
//     already proven in a checkpoint signed with a pinned key; this package
//     reads no network and no file.
//
//   - Every string from a ledger is untrusted (a device wrote it): the page
//     is rendered with html/template, which escapes each field for where it
//     lands (text, attribute, SVG), and the page loads nothing: no script,
//     no style sheet, no font, no image from elsewhere.
package report

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/ledger"
)

// Log is one appliance's ledger as the report read it: what a reader
// needs to check the page against the ledger itself.
type Log struct {
	Origin      string `json:"origin"`       // custodian/<ID>, from the signed checkpoint
	Custodian   string `json:"custodian"`    // the ID
	Source      string `json:"source"`       // where it was read: a URL, or "an exported copy of <ID>'s ledger"
	Size        int64  `json:"size"`         // entries in the signed tree, all counted
	RootHash    string `json:"root_hash"`    // the signed tree's root hash (base64, as in the checkpoint)
	VerifierKey string `json:"verifier_key"` // the key the checkpoint was verified with (name+hash+key)
	Checkpoint  string `json:"checkpoint"`   // the checkpoint's text and the verified signature only
	Newest      string `json:"newest_entry"` // the latest entry's time (RFC 3339), "" for an empty ledger
}

// Month is one custodian's releases and refusals in one calendar month
// (UTC).
type Month struct {
	Month     string `json:"month"` // 2006-01
	Custodian string `json:"custodian"`
	Releases  uint64 `json:"releases"`        // release entries (one per key ID per request) no failure entry undid
	Failed    uint64 `json:"failed_releases"` // release entries a failure entry for the same key ID followed: nothing released
	Refusals  uint64 `json:"refusals"`        // refusal entries: a signed warrant refused
	Counted   uint64 `json:"counted"`         // refusals tallied in unverified entries, not logged one by one
	Failures  uint64 `json:"failures"`        // failure entries that undid no release entry (a change that failed)
	Other     uint64 `json:"other"`           // init, provision, trust, reseal, resolve, floor entries
}

// Reason is how many refusals one custodian logged for one reason in one
// month.
type Reason struct {
	Month     string `json:"month"`
	Custodian string `json:"custodian"`
	Reason    string `json:"reason"`
	// Counted says the refusals were tallied in unverified entries (no
	// warrant that verified stood behind them), not logged one by one.
	Counted bool   `json:"counted"`
	Count   uint64 `json:"count"`
}

// Key is one key ID on one custodian: the entries that name it.
type Key struct {
	KeyID      string `json:"key_id"`
	Custodian  string `json:"custodian"`
	Releases   uint64 `json:"releases"` // as Month.Releases
	Failed     uint64 `json:"failed_releases"`
	Refusals   uint64 `json:"refusals"`
	Provisions uint64 `json:"provisions"`
	First      string `json:"first"` // the earliest entry naming it (RFC 3339)
	Last       string `json:"last"`  // the latest
}

// Opened is an entry whose commitment a court has opened: the entry as
// the ledger has it and what the opening shows of its warrant. The caller
// checks the opening (hsm/opening) against the ledger's pinned key and
// that the entry is the one the report read at Index. Every string but
// Checked and Shows comes from the warrant or the ledger: untrusted.
type Opened struct {
	Custodian string   `json:"custodian"`
	Index     int64    `json:"index"`
	Time      string   `json:"time"` // the entry's time (RFC 3339)
	Kind      string   `json:"kind"` // release, refusal or failure
	Outcome   string   `json:"outcome"`
	Reason    string   `json:"reason"`
	KeyID     string   `json:"key_id"`
	Court     string   `json:"court"`
	Docket    string   `json:"docket"`
	Serial    string   `json:"serial"`
	Signers   []string `json:"signers"`
	// Envelopes is the count of the warrant's whole envelope list a scoped
	// release entry committed to (every key ID's), 0 for none.
	Envelopes     int  `json:"envelopes"`
	CourtVerified bool `json:"court_verified"`
	// Checked says what was checked of the court; Shows what the opening
	// proves (for a refusal entry: only that a copy was submitted).
	Checked string `json:"checked"`
	Shows   string `json:"shows"`
}

// Report is the figures, in the order the page shows them.
type Report struct {
	Generated string   `json:"generated"` // RFC 3339, UTC
	Logs      []Log    `json:"logs"`
	Months    []Month  `json:"months"`
	Reasons   []Reason `json:"reasons"`
	Keys      []Key    `json:"key_ids"`
	Opened    []Opened `json:"opened"`
	NotPublic []string `json:"not_public"`
}

// notPublic names the figures a ledger does not make public, and why:
// the page says so instead of guessing.
var notPublic = []string{
	"Envelopes released per warrant: a release entry commits to the warrant's envelope list and its count, and the commitment stays closed. One entry is one key ID of one request, however many envelopes it names.",
	"Warrants per court: an entry commits to the warrant it is about without naming the court that signed it.",
	"Which entries belong to the same warrant: each commitment has its own salt, so two entries of one request cannot be matched from the ledger.",
}

type monthKey struct{ month, custodian string }
type reasonKey struct {
	monthKey
	reason  string
	counted bool
}
type keyKey struct{ keyID, custodian string }

// Bounds on what one ledger adds to the report: a device holding its
// ledger's key could otherwise log a new reason or key ID in every entry
// and make the report's memory and page as large as it likes. Reasons
// and key IDs past the bound are folded into one row each (OtherReasons,
// OtherKeyIDs: no real reason or key ID has parentheses), as are a
// month's reasons once the ledger has MaxReasonRows rows; a ledger
// spanning more months is refused (ErrTooManyMonths).
const (
	MaxReasons    = 256  // distinct reasons per ledger
	MaxReasonRows = 4096 // distinct (month, reason) rows per ledger
	MaxKeyIDs     = 1000 // distinct key IDs per ledger
	MaxMonths     = 1200 // distinct months per ledger: a century
)

// The rows that hold what is past MaxReasons and MaxKeyIDs.
const (
	OtherReasons = "(other reasons)"
	OtherKeyIDs  = "(other key IDs)"
)

// Errors Add returns: the ledger is refused, its figures cannot be shown.
var (
	ErrTooManyMonths = fmt.Errorf("its entries span more than %d months", MaxMonths)
	ErrCountOverflow = errors.New("its refusal counts add up past 18446744073709551615 (2^64-1)")
)

// changeFailed is the reason of a failure entry for a trust, provision or
// reseal change (ledger.State): it undoes no release.
const changeFailed = "change-failed"

// Builder adds up entries as they are read; it keeps the figures, not the
// entries: its memory is bounded by MaxReasons, MaxKeyIDs and MaxMonths
// per ledger, not by the ledger's size.
type Builder struct {
	logs    []Log
	months  map[monthKey]*Month
	reasons map[reasonKey]uint64
	keys    map[keyKey]*Key
	times   map[keyKey][2]time.Time
	ledgers map[string]*ledgerSeen
	opened  []Opened
}

// ledgerSeen is what Add keeps per custodian to apply the bounds and to
// match failure entries with the release entries they undo.
type ledgerSeen struct {
	months, reasons, keyIDs map[string]bool
	reasonRows              int
	newest                  time.Time
	// open counts, per key ID and month, release entries no failure
	// entry has undone yet.
	open map[string]map[string]uint64
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{months: map[monthKey]*Month{}, reasons: map[reasonKey]uint64{},
		keys: map[keyKey]*Key{}, times: map[keyKey][2]time.Time{}, ledgers: map[string]*ledgerSeen{}}
}

// Custodian is the ID an origin names: origins are exactly
// custodian/<ID>, ID as ids.CheckCustodian has it, as an appliance's
// ledger key is named.
func Custodian(origin string) (string, error) {
	id, ok := strings.CutPrefix(origin, "custodian/")
	if !ok || ids.CheckCustodian(id) != nil {
		return "", fmt.Errorf("its key is named %q, not custodian/ and a custodian ID (lowercase letters, digits, '.' and '-')", origin)
	}
	return id, nil
}

// AddLog records a log whose entries were added: its checkpoint must
// have verified, and every one of its entries must have been added.
func (b *Builder) AddLog(l Log) {
	l.Custodian = strings.TrimPrefix(l.Origin, "custodian/")
	if seen := b.ledgers[l.Custodian]; seen != nil && !seen.newest.IsZero() {
		l.Newest = seen.newest.UTC().Format(time.RFC3339)
	}
	b.logs = append(b.logs, l)
}

// AddOpened records an entry whose opening the caller checked.
func (b *Builder) AddOpened(o Opened) { b.opened = append(b.opened, o) }

// Newest is the time of the latest entry of custodian's ledger added so
// far, zero if none.
func (b *Builder) Newest(custodian string) time.Time {
	if l := b.ledgers[custodian]; l != nil {
		return l.newest
	}
	return time.Time{}
}

// seen is custodian's bookkeeping.
func (b *Builder) seen(custodian string) *ledgerSeen {
	l := b.ledgers[custodian]
	if l == nil {
		l = &ledgerSeen{months: map[string]bool{}, reasons: map[string]bool{}, keyIDs: map[string]bool{}, open: map[string]map[string]uint64{}}
		b.ledgers[custodian] = l
	}
	return l
}

// bounded is v, or other once set holds limit values other than v.
func bounded(set map[string]bool, v string, limit int, other string) string {
	if !set[v] {
		if len(set) >= limit {
			return other
		}
		set[v] = true
	}
	return v
}

// Add counts one entry of custodian's ledger, proven in its checkpoint,
// entries in ledger order. An error refuses the ledger: its figures
// cannot be shown (ErrTooManyMonths, ErrCountOverflow).
func (b *Builder) Add(custodian string, e *ledger.Entry) error {
	l := b.seen(custodian)
	month := e.Time.UTC().Format("2006-01")
	if !l.months[month] && len(l.months) >= MaxMonths {
		return ErrTooManyMonths
	}
	l.months[month] = true
	if e.Time.After(l.newest) {
		l.newest = e.Time
	}
	keyID := e.KeyID
	if keyID != "" {
		keyID = bounded(l.keyIDs, keyID, MaxKeyIDs, OtherKeyIDs)
	}
	mk := monthKey{month, custodian}
	m := b.months[mk]
	if m == nil {
		m = &Month{Month: month, Custodian: custodian}
		b.months[mk] = m
	}
	switch e.Kind {
	case ledger.KindRelease:
		m.Releases++
		if l.open[keyID] == nil {
			l.open[keyID] = map[string]uint64{}
		}
		l.open[keyID][month]++
	case ledger.KindRefusal:
		m.Refusals++
		b.reasons[b.reasonRow(l, mk, cmp.Or(e.Reason, "unstated"), false)]++
	case ledger.KindUnverified:
		if err := b.tally(l, mk, m, e.Counts); err != nil {
			return err
		}
	case ledger.KindFailure:
		if !b.undoRelease(l, custodian, keyID, e.Reason) {
			m.Failures++
		}
	default:
		m.Other++
	}
	if keyID != "" {
		b.key(keyID, custodian, e)
	}
	return nil
}

// tally adds an unverified entry's counts, refusing a sum past 2^64-1.
func (b *Builder) tally(l *ledgerSeen, mk monthKey, m *Month, counts map[string]uint64) error {
	for reason, n := range counts {
		rk := b.reasonRow(l, mk, reason, true)
		if m.Counted+n < n || b.reasons[rk]+n < n {
			return ErrCountOverflow
		}
		m.Counted += n
		b.reasons[rk] += n
	}
	return nil
}

// reasonRow is the row a refusal for reason in mk is counted in: its own,
// or OtherReasons past MaxReasons reasons or MaxReasonRows rows.
func (b *Builder) reasonRow(l *ledgerSeen, mk monthKey, reason string, counted bool) reasonKey {
	rk := reasonKey{mk, bounded(l.reasons, reason, MaxReasons, OtherReasons), counted}
	if _, ok := b.reasons[rk]; !ok {
		if l.reasonRows >= MaxReasonRows {
			rk.reason = OtherReasons
		} else {
			l.reasonRows++
		}
	}
	return rk
}

// undoRelease moves the latest release entry of keyID that no failure has
// undone yet from releases to failed releases, and reports whether there
// was one. A release writes its entry first and a failure entry with the
// same key ID when sealing or storing then fails, or at the next start
// after an interruption (docs/ledger.md); the failure's commitment has its
// own salt, so the key ID and the order are what tie the two. A failure
// of a change (change-failed) undoes no release.
func (b *Builder) undoRelease(l *ledgerSeen, custodian, keyID, reason string) bool {
	if keyID == "" || reason == changeFailed {
		return false
	}
	months := l.open[keyID]
	if len(months) == 0 {
		return false
	}
	month := slices.Max(slices.Collect(maps.Keys(months)))
	if months[month]--; months[month] == 0 {
		delete(months, month)
	}
	m := b.months[monthKey{month, custodian}]
	m.Releases--
	m.Failed++
	k := b.keys[keyKey{keyID, custodian}]
	k.Releases--
	k.Failed++
	return true
}

// key counts an entry that names a key ID.
func (b *Builder) key(keyID, custodian string, e *ledger.Entry) {
	kk := keyKey{keyID, custodian}
	k := b.keys[kk]
	if k == nil {
		k = &Key{KeyID: keyID, Custodian: custodian}
		b.keys[kk] = k
		b.times[kk] = [2]time.Time{e.Time, e.Time}
	}
	switch e.Kind {
	case ledger.KindRelease:
		k.Releases++
	case ledger.KindRefusal:
		k.Refusals++
	case ledger.KindProvision:
		k.Provisions++
	}
	t := b.times[kk]
	if e.Time.Before(t[0]) {
		t[0] = e.Time
	}
	if e.Time.After(t[1]) {
		t[1] = e.Time
	}
	b.times[kk] = t
}

// Report returns the figures, sorted: months oldest first, then by
// custodian; reasons by count, largest first within a month; key IDs by
// name.
func (b *Builder) Report(now time.Time) *Report {
	r := &Report{Generated: now.UTC().Format(time.RFC3339), Logs: slices.Clone(b.logs),
		Months: []Month{}, Reasons: []Reason{}, Keys: []Key{}, Opened: slices.Clone(b.opened), NotPublic: notPublic}
	if r.Opened == nil {
		r.Opened = []Opened{}
	}
	slices.SortFunc(r.Opened, func(a, b Opened) int {
		return cmp.Or(strings.Compare(a.Custodian, b.Custodian), cmp.Compare(a.Index, b.Index))
	})
	if r.Logs == nil {
		r.Logs = []Log{}
	}
	slices.SortFunc(r.Logs, func(a, b Log) int { return strings.Compare(a.Origin, b.Origin) })
	for _, mk := range slices.SortedFunc(maps.Keys(b.months), compareMonths) {
		r.Months = append(r.Months, *b.months[mk])
	}
	for rk, n := range b.reasons {
		r.Reasons = append(r.Reasons, Reason{Month: rk.month, Custodian: rk.custodian, Reason: rk.reason, Counted: rk.counted, Count: n})
	}
	slices.SortFunc(r.Reasons, func(a, b Reason) int {
		return cmp.Or(compareMonths(monthKey{a.Month, a.Custodian}, monthKey{b.Month, b.Custodian}),
			cmp.Compare(b.Count, a.Count), strings.Compare(a.Reason, b.Reason), compareBool(a.Counted, b.Counted))
	})
	for kk, k := range b.keys {
		t := b.times[kk]
		k.First, k.Last = t[0].UTC().Format(time.RFC3339), t[1].UTC().Format(time.RFC3339)
		r.Keys = append(r.Keys, *k)
	}
	slices.SortFunc(r.Keys, func(a, b Key) int {
		return cmp.Or(strings.Compare(a.KeyID, b.KeyID), strings.Compare(a.Custodian, b.Custodian))
	})
	return r
}

func compareMonths(a, b monthKey) int {
	return cmp.Or(strings.Compare(a.month, b.month), strings.Compare(a.custodian, b.custodian))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// Totals are the sums the page's summary shows.
type Totals struct{ Releases, Failed, Refusals, Counted, Entries uint64 }

// Totals adds up every month, and every log's size.
func (r *Report) Totals() Totals {
	var t Totals
	for _, m := range r.Months {
		t.Releases = Sum(t.Releases, m.Releases)
		t.Failed = Sum(t.Failed, m.Failed)
		t.Refusals = Sum(t.Refusals, m.Refusals)
		t.Counted = Sum(t.Counted, m.Counted)
	}
	for _, l := range r.Logs {
		t.Entries = Sum(t.Entries, uint64(l.Size))
	}
	return t
}

// Sum is a+b, or 2^64-1 if that is past it: each ledger's own figures are
// exact (Add refuses one that overflows), but several ledgers' sums can
// reach the limit; the page then shows the largest count it can hold.
func Sum(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

func (t Totals) String() string {
	return fmt.Sprintf("%s (and %s that failed), %s logged, %s counted in tallies, in %s",
		count(t.Releases, "release", "releases"), count(t.Failed, "release", "releases"), count(t.Refusals, "refusal", "refusals"),
		count(t.Counted, "refusal", "refusals"), count(t.Entries, "entry", "entries"))
}

func count(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
