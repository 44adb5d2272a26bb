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
//     page as not public ([Report.NotPublic]). Entries opened by a court
//     will have their own section ([Report.Opened]); none is opened yet.
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
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// Log is one appliance's ledger as the report read it.
type Log struct {
	Origin     string `json:"origin"`     // custodian/<ID>, from the signed checkpoint
	Custodian  string `json:"custodian"`  // the ID
	Source     string `json:"source"`     // where it was read (a URL or a directory)
	Size       int64  `json:"size"`       // entries in the signed tree, all counted
	Checkpoint string `json:"checkpoint"` // the signed checkpoint every entry was proven in
}

// Month is one custodian's releases and refusals in one calendar month
// (UTC).
type Month struct {
	Month     string `json:"month"` // 2006-01
	Custodian string `json:"custodian"`
	Releases  uint64 `json:"releases"` // release entries (one per key ID per request)
	Refusals  uint64 `json:"refusals"` // refusal entries: a signed warrant refused
	Counted   uint64 `json:"counted"`  // refusals before verification, counted in unverified entries
	Failures  uint64 `json:"failures"` // failure entries: an operation failed after its entry
	Other     uint64 `json:"other"`    // init, provision, trust, reseal, resolve, floor entries
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
	Releases   uint64 `json:"releases"`
	Refusals   uint64 `json:"refusals"`
	Provisions uint64 `json:"provisions"`
	First      string `json:"first"` // the earliest entry naming it (RFC 3339)
	Last       string `json:"last"`  // the latest
}

// Opened is an entry whose commitment a court has opened. The report has
// none until the ledger can reveal one; the section is reserved.
type Opened struct {
	Custodian string `json:"custodian"`
	Index     int64  `json:"index"`
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

// Builder adds up entries as they are read; it keeps the figures, not the
// entries, so a ledger of millions of entries takes little memory.
type Builder struct {
	logs    []Log
	months  map[monthKey]*Month
	reasons map[reasonKey]uint64
	keys    map[keyKey]*Key
	times   map[keyKey][2]time.Time
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder {
	return &Builder{months: map[monthKey]*Month{}, reasons: map[reasonKey]uint64{},
		keys: map[keyKey]*Key{}, times: map[keyKey][2]time.Time{}}
}

// Custodian is the ID an origin (custodian/<ID>) names.
func Custodian(origin string) string {
	if id, ok := strings.CutPrefix(origin, "custodian/"); ok && id != "" {
		return id
	}
	return origin
}

// AddLog records a log whose entries follow: its checkpoint must have
// verified, and every one of its entries must be added.
func (b *Builder) AddLog(l Log) {
	l.Custodian = Custodian(l.Origin)
	b.logs = append(b.logs, l)
}

// Add counts one entry of custodian's ledger, proven in its checkpoint.
func (b *Builder) Add(custodian string, e *ledger.Entry) {
	mk := monthKey{e.Time.UTC().Format("2006-01"), custodian}
	m := b.months[mk]
	if m == nil {
		m = &Month{Month: mk.month, Custodian: custodian}
		b.months[mk] = m
	}
	switch e.Kind {
	case ledger.KindRelease:
		m.Releases++
	case ledger.KindRefusal:
		m.Refusals++
		b.reasons[reasonKey{mk, cmp.Or(e.Reason, "unstated"), false}]++
	case ledger.KindUnverified:
		for reason, n := range e.Counts {
			m.Counted += n
			b.reasons[reasonKey{mk, reason, true}] += n
		}
	case ledger.KindFailure:
		m.Failures++
	default:
		m.Other++
	}
	if e.KeyID != "" {
		b.key(custodian, e)
	}
}

// key counts an entry that names a key ID.
func (b *Builder) key(custodian string, e *ledger.Entry) {
	kk := keyKey{e.KeyID, custodian}
	k := b.keys[kk]
	if k == nil {
		k = &Key{KeyID: e.KeyID, Custodian: custodian}
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
		Opened: []Opened{}, NotPublic: notPublic}
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
type Totals struct{ Releases, Refusals, Counted, Entries uint64 }

// Totals adds up every month, and every log's size.
func (r *Report) Totals() Totals {
	var t Totals
	for _, m := range r.Months {
		t.Releases += m.Releases
		t.Refusals += m.Refusals
		t.Counted += m.Counted
	}
	for _, l := range r.Logs {
		t.Entries += uint64(l.Size)
	}
	return t
}

func (t Totals) String() string {
	return fmt.Sprintf("%s, %s logged, %s counted before verification, in %s",
		count(t.Releases, "release", "releases"), count(t.Refusals, "refusal", "refusals"),
		count(t.Counted, "refusal", "refusals"), count(t.Entries, "entry", "entries"))
}

func count(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
