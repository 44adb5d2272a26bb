package report

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// sample makes n entries of custodian, spread over three months, of every
// kind the figures count, from seed.
func sample(seed uint64, n int) []*ledger.Entry {
	rng := rand.New(rand.NewPCG(seed, 1))
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	reasons := []string{"no-press", "expired", "not_addressed"}
	var out []*ledger.Entry
	for i := range n {
		e := &ledger.Entry{Time: start.Add(time.Duration(rng.IntN(90*24)) * time.Hour), Counter: uint64(i)}
		switch rng.IntN(5) {
		case 0, 1:
			e.Kind, e.Outcome, e.KeyID = ledger.KindRelease, ledger.OutcomeOK, fmt.Sprintf("2026-%02d", 9+rng.IntN(2))
		case 2:
			e.Kind, e.Outcome, e.Reason, e.KeyID = ledger.KindRefusal, ledger.OutcomeRefused, reasons[rng.IntN(3)], "2026-09"
		case 3:
			e.Kind, e.Outcome = ledger.KindUnverified, ledger.OutcomeRefused
			e.Counts = map[string]uint64{"busy": uint64(1 + rng.IntN(9)), "malformed_cms": uint64(1 + rng.IntN(3))}
		default:
			e.Kind, e.Outcome, e.KeyID = ledger.KindProvision, ledger.OutcomeOK, "2026-10"
		}
		out = append(out, e)
	}
	return out
}

// TestReportFigures: the JSON and CSV figures equal the counts of the
// entries added, counted here the plain way.
func TestReportFigures(t *testing.T) {
	b := NewBuilder()
	type cell struct{ month, custodian, what string }
	want := map[cell]uint64{}
	for i, id := range []string{"court-a", "court-b"} {
		entries := sample(uint64(i), 500)
		b.AddLog(Log{Origin: "custodian/" + id, Size: int64(len(entries))})
		for _, e := range entries {
			b.Add(id, e)
			month := e.Time.Format("2006-01")
			switch e.Kind {
			case ledger.KindRelease:
				want[cell{month, id, "release"}]++
				want[cell{e.KeyID, id, "key-release"}]++
			case ledger.KindRefusal:
				want[cell{month, id, "refusal"}]++
				want[cell{month, id, "logged " + e.Reason}]++
			case ledger.KindUnverified:
				for r, n := range e.Counts {
					want[cell{month, id, "counted"}] += n
					want[cell{month, id, "counted " + r}] += n
				}
			case ledger.KindProvision:
				want[cell{e.KeyID, id, "key-provision"}]++
			}
		}
	}
	r := b.Report(time.Now())
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	got := map[cell]uint64{}
	add := func(c cell, n uint64) {
		if n > 0 {
			got[c] += n
		}
	}
	for _, m := range back.Months {
		add(cell{m.Month, m.Custodian, "release"}, m.Releases)
		add(cell{m.Month, m.Custodian, "refusal"}, m.Refusals)
		add(cell{m.Month, m.Custodian, "counted"}, m.Counted)
	}
	for _, x := range back.Reasons {
		how := map[bool]string{true: "counted ", false: "logged "}[x.Counted]
		add(cell{x.Month, x.Custodian, how + x.Reason}, x.Count)
	}
	for _, k := range back.Keys {
		add(cell{k.KeyID, k.Custodian, "key-release"}, k.Releases)
		add(cell{k.KeyID, k.Custodian, "key-provision"}, k.Provisions)
	}
	if len(got) != len(want) {
		t.Errorf("%d figures, want %d", len(got), len(want))
	}
	for c, n := range want {
		if got[c] != n {
			t.Errorf("%v: %d, want %d", c, got[c], n)
		}
	}

	// The CSV holds the same months as the JSON.
	buf.Reset()
	if err := r.writeMonths(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(r.Months)+1 {
		t.Fatalf("months.csv has %d rows, want %d and a header", len(rows), len(r.Months))
	}
	for i, m := range r.Months {
		if row := rows[i+1]; row[0] != "'"+m.Month || row[1] != m.Custodian || row[2] != u(m.Releases) || row[3] != u(m.Failed) || row[4] != u(m.Refusals) || row[5] != u(m.Counted) {
			t.Errorf("months.csv row %d = %v, want %+v", i+1, row, m)
		}
	}
}

// TestWriteMakesEveryFile: Write leaves the page, the JSON and each CSV.
func TestWriteMakesEveryFile(t *testing.T) {
	b := NewBuilder()
	for _, e := range sample(7, 50) {
		b.Add("court-a", e)
	}
	dir := filepath.Join(t.TempDir(), "out")
	if err := b.Report(time.Now()).Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{PageFile, JSONFile, MonthsCSV, ReasonsCSV, KeyIDsCSV, OpenedCSV} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// hostile is what a device could put in every string field the page
// shows, if it were not escaped.
var hostile = []string{
	`<script>alert(1)</script>`,
	`"><img src=x onerror=alert(1)>`,
	`</title><script>alert(1)</script>`,
	`</text><foreignObject><iframe src="javascript:alert(1)"></iframe></foreignObject>`,
	`' onmouseover='alert(1)`,
	`]]><script>alert(1)</script>`,
	`<style>body{display:none}</style>`,
	`<a href="https://elsewhere.example/">x</a>`,
}

// pageWith renders a report whose every device-written string is s.
func pageWith(t testing.TB, s string) []byte {
	b := NewBuilder()
	b.AddLog(Log{Origin: "custodian/" + s, Source: s, Checkpoint: s, Size: 3})
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	b.Add(s, &ledger.Entry{Time: at, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: s})
	b.Add(s, &ledger.Entry{Time: at, Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: s, KeyID: s})
	b.Add(s, &ledger.Entry{Time: at, Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: map[string]uint64{s: 2}})
	b.AddOpened(hostileOpened(s))
	var buf bytes.Buffer
	if err := b.Report(at).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// hostileOpened is an opened entry whose every string is s: a warrant's
// court, docket, serial and signer names are whatever its signer wrote.
func hostileOpened(s string) Opened {
	return Opened{Custodian: s, Index: 2, Time: s, Kind: s, Outcome: s, Reason: s, KeyID: s, Court: s, Docket: s, Serial: s,
		Signers: []string{s, s}, Envelopes: 3, Checked: s, Shows: s}
}

// checkNoInjection parses the page as a browser does and fails on any
// element or attribute the template does not write: a field that became
// markup.
func checkNoInjection(t testing.TB, field string, page []byte) {
	t.Helper()
	allowed := map[string]bool{"html": true, "head": true, "meta": true, "title": true, "style": true, "body": true,
		"header": true, "h1": true, "h2": true, "p": true, "time": true, "main": true, "section": true, "table": true,
		"caption": true, "thead": true, "tbody": true, "tr": true, "th": true, "td": true, "details": true, "summary": true,
		"pre": true, "figure": true, "span": true, "svg": true, "desc": true, "g": true, "text": true, "rect": true,
		"figcaption": true, "a": true, "code": true, "ul": true, "li": true, "footer": true, "div": true}
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	styles := 0
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		if !allowed[n.Data] {
			t.Fatalf("field %q made a <%s> element", field, n.Data)
		}
		if n.Data == "style" {
			styles++
		}
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") || strings.Contains(a.Val, "javascript:") {
				t.Fatalf("field %q made the attribute %s=%q on <%s>", field, a.Key, a.Val, n.Data)
			}
			if n.Data == "a" && a.Key == "href" && strings.Contains(a.Val, "//") {
				t.Fatalf("field %q made a link to %q", field, a.Val)
			}
		}
	}
	if styles != 1 {
		t.Fatalf("field %q: %d <style> elements, want the page's one", field, styles)
	}
}

// TestInvariantReportEscapesLedgerFields: whatever a device writes in an
// origin, key ID, reason or tally, and whatever a warrant's signer writes
// in an opened entry's court, docket, serial or signer, the page shows it
// as text; it never
// becomes an element, an attribute, a script or a link.
func TestInvariantReportEscapesLedgerFields(t *testing.T) {
	for _, s := range hostile {
		page := pageWith(t, s)
		checkNoInjection(t, s, page)
		if !bytes.Contains(page, []byte(html.EscapeString(s))) && !bytes.Contains(page, []byte(templateEscaped(s))) {
			t.Errorf("field %q is not shown as text on the page", s)
		}
	}
}

// templateEscaped is s as html/template escapes text.
func templateEscaped(s string) string {
	return strings.NewReplacer("&", "&amp;", "'", "&#39;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "\x00", "\uFFFD").Replace(s)
}

// FuzzReportPage: no string in any field a device writes makes markup.
func FuzzReportPage(f *testing.F) {
	for _, s := range hostile {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkNoInjection(t, s, pageWith(t, s))
	})
}

// TestPageLoadsNothing: the page names no script, no source to load, and
// links only to its own sections and the files written beside it; its
// content security policy forbids loading anything but its inline style.
func TestPageLoadsNothing(t *testing.T) {
	b := NewBuilder()
	b.AddLog(Log{Origin: "custodian/court-a", Source: "https://custodian-a.example:8443", Size: 50})
	for _, e := range sample(3, 50) {
		b.Add("court-a", e)
	}
	var buf bytes.Buffer
	if err := b.Report(time.Now()).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	siblings := map[string]bool{JSONFile: true, MonthsCSV: true, ReasonsCSV: true, KeyIDsCSV: true, OpenedCSV: true}
	ids := map[string]bool{}
	var fragments []string
	csp := ""
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		if n.Data == "script" || n.Data == "link" || n.Data == "img" || n.Data == "iframe" {
			t.Errorf("the page has a <%s>", n.Data)
		}
		for _, a := range n.Attr {
			switch {
			case a.Key == "id":
				ids[a.Val] = true
			case a.Key == "src" || a.Key == "srcset" || a.Key == "xlink:href":
				t.Errorf("<%s %s=%q>", n.Data, a.Key, a.Val)
			case a.Key == "href" && strings.HasPrefix(a.Val, "#"):
				fragments = append(fragments, a.Val[1:])
			case a.Key == "href" && !siblings[a.Val]:
				t.Errorf("a link to %q", a.Val)
			case a.Key == "http-equiv" && a.Val == "Content-Security-Policy":
				for _, c := range n.Attr {
					if c.Key == "content" {
						csp = c.Val
					}
				}
			}
		}
	}
	for _, f := range fragments {
		if !ids[f] {
			t.Errorf("a link to #%s, which the page does not have", f)
		}
	}
	if !strings.HasPrefix(csp, "default-src 'none'") {
		t.Errorf("content security policy %q, want default-src 'none'", csp)
	}
}

// TestCSVFieldsAreNotFormulas: a field a spreadsheet would run as a
// formula is written as text; CSV quoting keeps commas and quotes in
// their field.
func TestCSVFieldsAreNotFormulas(t *testing.T) {
	b := NewBuilder()
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, s := range []string{`=HYPERLINK("https://elsewhere.example/")`, "+1", "-1", "@SUM(A1)", `a,"b"`} {
		b.Add(s, &ledger.Entry{Time: at, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: s})
	}
	var buf bytes.Buffer
	if err := b.Report(at).writeKeys(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 6 {
		t.Fatalf("%d rows, want a header and 5", len(rows))
	}
	for _, row := range rows[1:] {
		for _, f := range row[:2] {
			if strings.ContainsAny(f[:1], "=+-@") {
				t.Errorf("field %q starts a formula", f)
			}
		}
		if row[0] != row[1] || (row[0] != `a,"b"` && row[0][0] != '\'') {
			t.Errorf("row %q: the key ID and custodian fields are not the value written, as text", row)
		}
	}
}

var day = time.Date(2026, 11, 5, 12, 0, 0, 0, time.UTC)

func release(keyID string, at time.Time) *ledger.Entry {
	return &ledger.Entry{Time: at, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: keyID}
}

func failure(keyID, code string, at time.Time) *ledger.Entry {
	return &ledger.Entry{Time: at, Kind: ledger.KindFailure, Outcome: ledger.OutcomeRefused, KeyID: keyID, Reason: code}
}

// TestFailedReleasesAreNotReleases: a release entry that a failure entry
// for its key ID follows (sealing failed, or the appliance stopped and
// logged it as interrupted at its next start, in the next month here) is
// a failed release, in the release's month and key ID, not a release; a
// failed change (change-failed) and a failure with no release before it
// undo nothing.
func TestFailedReleasesAreNotReleases(t *testing.T) {
	b := NewBuilder()
	next := day.AddDate(0, 1, 0)
	for _, e := range []*ledger.Entry{
		release("2026-11", day), failure("2026-11", "store_failed", day),
		release("2026-11", day), release("2026-10", day),
		failure("2026-10", "interrupted", next),
		failure("2026-11", "change-failed", next),
		failure("2026-09", "seal_failed", next),
	} {
		if err := b.Add("court-a", e); err != nil {
			t.Fatal(err)
		}
	}
	r := b.Report(day)
	want := []Month{
		{Month: "2026-11", Custodian: "court-a", Releases: 1, Failed: 2},
		{Month: "2026-12", Custodian: "court-a", Failures: 2},
	}
	if !slices.Equal(r.Months, want) {
		t.Errorf("months %+v, want %+v", r.Months, want)
	}
	for _, k := range r.Keys {
		if w := map[string][2]uint64{"2026-11": {1, 1}, "2026-10": {0, 1}, "2026-09": {0, 0}}[k.KeyID]; [2]uint64{k.Releases, k.Failed} != w {
			t.Errorf("key ID %s: %d releases, %d failed, want %v", k.KeyID, k.Releases, k.Failed, w)
		}
	}
	if got := r.Totals().String(); !strings.HasPrefix(got, "1 release (and 2 releases that failed)") {
		t.Errorf("totals %q", got)
	}
}

// TestInvariantReportBoundsOneLedger: a ledger that logs a new reason or
// key ID in every entry adds at most MaxReasons and MaxKeyIDs rows, the
// rest folded into one row each, every count kept; one spanning more than
// MaxMonths months is refused.
func TestInvariantReportBoundsOneLedger(t *testing.T) {
	b := NewBuilder()
	const n = 3000
	for i := range n {
		counts := map[string]uint64{fmt.Sprintf("r%d", i): 1}
		if err := b.Add("court-a", &ledger.Entry{Time: day, Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: counts}); err != nil {
			t.Fatal(err)
		}
		if err := b.Add("court-a", release(fmt.Sprintf("k%d", i), day)); err != nil {
			t.Fatal(err)
		}
	}
	r := b.Report(day)
	if len(r.Reasons) != MaxReasons+1 || len(r.Keys) != MaxKeyIDs+1 {
		t.Errorf("%d reasons and %d key IDs, want %d and %d", len(r.Reasons), len(r.Keys), MaxReasons+1, MaxKeyIDs+1)
	}
	var reasons, releases uint64
	for _, x := range r.Reasons {
		reasons += x.Count
	}
	for _, k := range r.Keys {
		releases += k.Releases
		if k.KeyID == OtherKeyIDs && k.Releases != n-MaxKeyIDs {
			t.Errorf("%s: %d releases, want %d", OtherKeyIDs, k.Releases, n-MaxKeyIDs)
		}
	}
	if reasons != n || releases != n {
		t.Errorf("%d refusals and %d releases counted, want %d of each", reasons, releases, n)
	}

	// Eight reasons a month, every month: rows stop at MaxReasonRows, then
	// each month's are folded.
	b = NewBuilder()
	for i := range MaxMonths {
		counts := map[string]uint64{}
		for j := range 8 {
			counts[fmt.Sprintf("r%d", (8*i+j)%MaxReasons)] = 1
		}
		if err := b.Add("court-a", &ledger.Entry{Time: day.AddDate(0, i, 0), Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: counts}); err != nil {
			t.Fatal(err)
		}
	}
	if rows := len(b.Report(day).Reasons); rows > MaxReasonRows+MaxMonths {
		t.Errorf("%d reason rows, want at most %d and one per month", rows, MaxReasonRows+MaxMonths)
	}

	b = NewBuilder()
	var err error
	for i := 0; err == nil && i <= MaxMonths; i++ {
		err = b.Add("court-a", release("k", day.AddDate(0, i, 0)))
	}
	if !errors.Is(err, ErrTooManyMonths) {
		t.Errorf("%d months: %v, want %v", MaxMonths+1, err, ErrTooManyMonths)
	}
}

// TestInvariantReportCountsDoNotWrap: tallies that add up past 2^64-1
// refuse the ledger instead of showing a wrapped figure; sums over several
// ledgers stop at 2^64-1.
func TestInvariantReportCountsDoNotWrap(t *testing.T) {
	b := NewBuilder()
	tally := &ledger.Entry{Time: day, Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: map[string]uint64{"busy": 1 << 63}}
	if err := b.Add("court-a", tally); err != nil {
		t.Fatal(err)
	}
	if err := b.Add("court-a", tally); !errors.Is(err, ErrCountOverflow) {
		t.Errorf("2^64 refusals: %v, want %v", err, ErrCountOverflow)
	}
	b = NewBuilder()
	for _, id := range []string{"court-a", "court-b"} {
		if err := b.Add(id, tally); err != nil {
			t.Fatal(err)
		}
		if err := b.Add(id, &ledger.Entry{Time: day, Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: map[string]uint64{"busy": 1<<63 - 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.Report(day).Totals().Counted; got != math.MaxUint64 {
		t.Errorf("two ledgers of 2^64-1 refusals each: total %d, want %d", got, uint64(math.MaxUint64))
	}
}

// TestEmptyReportHasNoNullLists: a report of an empty ledger has empty
// lists in its JSON, not null.
func TestEmptyReportHasNoNullLists(t *testing.T) {
	b := NewBuilder()
	b.AddLog(Log{Origin: "custodian/court-a"})
	var buf bytes.Buffer
	if err := b.Report(day).WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("null")) {
		t.Errorf("report.json has null:\n%s", buf.String())
	}
}

// TestChartsKeepLabelsApart: a row's label has a line of its own above its
// bars, so a long key ID and custodian cannot run over them; the key-ID
// and month charts' labels say which they are; the SVG scales to the
// page's width; one flooded series leaves the others' bars visible.
func TestChartsKeepLabelsApart(t *testing.T) {
	b := NewBuilder()
	long := strings.Repeat("w", 64)
	b.Add("court-with-a-rather-long-identifier-name-for-the-chart", release(long, day))
	b.Add("court-with-a-rather-long-identifier-name-for-the-chart", &ledger.Entry{Time: day, Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: map[string]uint64{"busy": math.MaxUint64}})
	charts := b.Report(day).charts()
	for _, c := range charts {
		for _, row := range c.Rows {
			for _, bar := range row.Bars {
				if bar.Y < row.Y+labelHeight {
					t.Errorf("%s: a bar at y %d overlaps its label at y %d", c.ID, bar.Y, row.Y)
				}
				if bar.Value > 0 && bar.W == 0 {
					t.Errorf("%s: %q: a bar of %d has no width", c.ID, row.Label, bar.Value)
				}
			}
		}
	}
	if !strings.HasPrefix(charts[0].Rows[0].Label, "month ") || !strings.HasPrefix(charts[2].Rows[0].Label, "key ID ") {
		t.Errorf("labels %q and %q do not say month and key ID", charts[0].Rows[0].Label, charts[2].Rows[0].Label)
	}
	if !strings.Contains(pageText, "svg { max-width: 100%") {
		t.Error("the page's SVG does not scale to its width")
	}
}

// TestCSVNamesStayText: a key ID or custodian a spreadsheet would read as
// a date or a number is marked as text.
func TestCSVNamesStayText(t *testing.T) {
	b := NewBuilder()
	for _, k := range []string{"1e5", "2026-11", "12:30", "0042", "k-1"} {
		b.Add("court-a", release(k, day))
	}
	var buf bytes.Buffer
	if err := b.Report(day).writeKeys(&buf); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"'1e5": true, "'2026-11": true, "'12:30": true, "'0042": true, "k-1": true}
	for _, row := range rows[1:] {
		if !want[row[0]] {
			t.Errorf("key ID cell %q", row[0])
		}
	}
}

// TestOpenedEntriesListed: opened entries are on the page, in report.json
// and in opened.csv, sorted by custodian and index; a docket a spreadsheet
// would read as a date, or a court it would run as a formula, stays text.
func TestOpenedEntriesListed(t *testing.T) {
	b := NewBuilder()
	b.Add("court-a", release("2026-11", day))
	for _, o := range []Opened{
		{Custodian: "court-b", Index: 0, Kind: "release", Court: "Court B", Docket: "CR-9/2026", Serial: "W-9", Signers: []string{"Judge B"}},
		{Custodian: "court-a", Index: 7, Kind: "refusal", Court: "=HYPERLINK(1)", Docket: "2026-11", Serial: "W-7", Signers: []string{"Judge A", "Clerk A"},
			Shows: "it shows only that a copy of this warrant was submitted"},
		{Custodian: "court-a", Index: 3, Kind: "release", Court: "Court A", Docket: "CR-3/2026", Serial: "W-3", Envelopes: 12, CourtVerified: true},
	} {
		b.AddOpened(o)
	}
	r := b.Report(day)
	var got []string
	for _, o := range r.Opened {
		got = append(got, fmt.Sprintf("%s/%d", o.Custodian, o.Index))
	}
	if strings.Join(got, " ") != "court-a/3 court-a/7 court-b/0" {
		t.Errorf("opened entries in the order %q", got)
	}
	var page, js, cs bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`id="opened-entries"`, "CR-3/2026", "CR-9/2026", "Judge A; Clerk A", "12 (the warrant's whole list)",
		"it shows only that a copy of this warrant was submitted"} {
		if !strings.Contains(page.String(), want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	if strings.Contains(page.String(), "No entry has been opened") {
		t.Error("the page says no entry has been opened")
	}
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Opened []Opened }
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil || len(doc.Opened) != 3 || doc.Opened[0].Envelopes != 12 || !doc.Opened[0].CourtVerified ||
		doc.Opened[1].Docket != "2026-11" {
		t.Errorf("report.json's opened: %+v %v", doc.Opened, err)
	}
	if err := r.writeOpened(&cs); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&cs).ReadAll()
	if err != nil || len(rows) != 4 {
		t.Fatalf("opened.csv: %q %v", rows, err)
	}
	if rows[2][1] != "'=HYPERLINK(1)" || rows[2][2] != "'2026-11" || rows[2][4] != "Judge A; Clerk A" {
		t.Errorf("opened.csv row %q: the court and docket are not kept as text", rows[2])
	}
}
