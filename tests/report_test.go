package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tests/need"
)

// fillLedger appends releases, refusals and unverified tallies to r's
// ledger over three months from now, as a device logs them.
func fillLedger(t testing.TB, r *rig, seed int) {
	t.Helper()
	at := time.Now().UTC().Truncate(time.Second)
	reasons := []release.Code{release.CodeNoPress, release.CodeButtonHeld, release.CodeReplayed}
	for i := range 40 + seed*7 {
		if i%13 == 12 {
			at = at.AddDate(0, 1, 0) // the next month
		}
		e := ledger.Entry{Time: at, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: fmt.Sprintf("2026-%02d", 10+(i+seed)%3)}
		switch (i + seed) % 4 {
		case 1, 2:
			e.Kind, e.Outcome, e.Reason = ledger.KindRefusal, ledger.OutcomeRefused, string(reasons[(i+seed)%3])
		case 3:
			e = ledger.Entry{Time: at, Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused,
				Counts: map[string]uint64{"busy": uint64(i + 1), "malformed_cms": uint64(seed + 1)}}
		}
		var subject []byte
		if e.Kind != ledger.KindUnverified {
			subject = fmt.Appendf(nil, "warrant %d", i)
		}
		if _, err := r.a.Ledger.Append(e, subject, nil); err != nil {
			t.Fatal(err)
		}
		if e.Kind == ledger.KindRelease && i%10 == 0 {
			// The release failed after its entry: a failure entry follows.
			f := ledger.Entry{Time: at, Kind: ledger.KindFailure, Outcome: ledger.OutcomeRefused, Reason: string(release.CodeInterrupted), KeyID: e.KeyID}
			if _, err := r.a.Ledger.Append(f, subject, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// figures are a report's numbers as the page's tables show them, keyed
// by table and row: "months 2026-12 court-a" → [releases, refusals, ...].
type figures map[string][]string

// ledgerFigures counts r's ledger the plain way, from its own records
// (not the tiles, not the report's code), as the page's tables lay them
// out.
func ledgerFigures(t testing.TB, id string, r *rig, into figures) {
	t.Helper()
	type month struct{ releases, failed, refusals, counted, failures, other uint64 }
	months := map[string]*month{}
	reasons := map[string]uint64{}
	keys := map[string][4]uint64{}
	open := map[string][]string{} // per key ID, the months of release entries no failure followed yet
	for from := int64(0); from < r.a.Ledger.Size(); from += ledger.MaxRange {
		rp, err := r.a.Ledger.ProveRange(from, min(from+ledger.MaxRange, r.a.Ledger.Size())-1)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range rp.Entries {
			e, err := ledger.ParseEntry([]byte(re.Entry))
			if err != nil {
				t.Fatal(err)
			}
			m := e.Time.Format("2006-01")
			if months[m] == nil {
				months[m] = &month{}
			}
			switch e.Kind {
			case ledger.KindRelease:
				months[m].releases++
				open[e.KeyID] = append(open[e.KeyID], m)
			case ledger.KindRefusal:
				months[m].refusals++
				reasons[m+" "+id+" "+e.Reason+" logged"]++
			case ledger.KindUnverified:
				for reason, n := range e.Counts {
					months[m].counted += n
					reasons[m+" "+id+" "+reason+" counted"] += n
				}
			case ledger.KindFailure:
				if o := open[e.KeyID]; len(o) > 0 {
					rm := o[len(o)-1]
					open[e.KeyID] = o[:len(o)-1]
					months[rm].releases--
					months[rm].failed++
					k := keys[e.KeyID+" "+id]
					k[0]--
					k[1]++
					keys[e.KeyID+" "+id] = k
				} else {
					months[m].failures++
				}
			default:
				months[m].other++
			}
			if e.KeyID != "" {
				k := keys[e.KeyID+" "+id]
				switch e.Kind {
				case ledger.KindRelease:
					k[0]++
				case ledger.KindRefusal:
					k[2]++
				case ledger.KindProvision:
					k[3]++
				}
				keys[e.KeyID+" "+id] = k
			}
		}
	}
	n := func(v uint64) string { return fmt.Sprint(v) }
	for m, c := range months {
		into["months "+m+" "+id] = []string{n(c.releases), n(c.failed), n(c.refusals), n(c.counted), n(c.failures), n(c.other)}
	}
	for k, c := range reasons {
		into["reasons "+k] = []string{n(c)}
	}
	for k, c := range keys {
		into["key-ids "+k] = []string{n(c[0]), n(c[1]), n(c[2]), n(c[3])}
	}
	into["logs "+id+" custodian/"+id] = []string{n(uint64(r.a.Ledger.Size()))}
}

// pageFigures reads the same numbers from the tables of a page's DOM.
func pageFigures(t testing.TB, dom []byte) (figures, string) {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(dom))
	if err != nil {
		t.Fatal(err)
	}
	// keyCells is how many leading cells name a row in each table; then
	// come its numbers (the key IDs' dates are not counted).
	keyCells := map[string]int{"logs": 2, "months": 2, "reasons": 4, "key-ids": 2}
	numbers := map[string]int{"logs": 1, "months": 6, "reasons": 1, "key-ids": 4}
	out := figures{}
	totals := ""
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		id := attr(n, "id")
		if id == "totals" {
			totals = text(n)
		}
		if n.Data != "table" || keyCells[id] == 0 {
			continue
		}
		for row := range n.Descendants() {
			if row.Type != html.ElementNode || row.Data != "tr" || row.Parent.Data != "tbody" {
				continue
			}
			var cells []string
			for c := range row.ChildNodes() {
				if c.Type == html.ElementNode {
					cells = append(cells, text(c))
				}
			}
			k := keyCells[id]
			if len(cells) < k+numbers[id] {
				t.Fatalf("table %s: row %q is short", id, cells)
			}
			out[id+" "+strings.Join(cells[:k], " ")] = cells[k : k+numbers[id]]
		}
	}
	return out, totals
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return strings.TrimSpace(b.String())
}

// chromium runs Debian's chromium headless on a file with args, within a
// minute. As root it needs --no-sandbox: its sandbox refuses to run as
// root.
func chromium(t testing.TB, page string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append([]string{"--headless", "--disable-gpu", "--no-first-run", "--user-data-dir=" + t.TempDir()}, args...)
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox")
	}
	cmd := exec.CommandContext(ctx, "chromium", append(args, "file://"+page)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// artifactDir is where a test leaves what a person may want to look at:
// $CUSTODIAN_ARTIFACTS, or the test's temporary directory.
func artifactDir(t testing.TB) string {
	if dir := os.Getenv("CUSTODIAN_ARTIFACTS"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

// TestReportPageInChromium: custodian report reads one appliance over
// TLS (its /v1/tlog/ tiles) and another's exported tile directory, each
// checked under its pinned key; Chromium opens the page it writes, with no
// network and no script, and every number its tables show equals the
// ledgers' own count; the JSON says the same. The screenshot is kept.
func TestReportPageInChromium(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	need.Command(t, "chromium", "chromium")
	a, b := newRigAs(t, "court-a"), newRigAs(t, "court-b")
	defer a.stop()
	defer b.stop()
	fillLedger(t, a, 0)
	fillLedger(t, b, 1)
	tiles := filepath.Join(t.TempDir(), "court-b-tiles")
	if _, err := b.a.Ledger.Export(tiles); err != nil {
		t.Fatal(err)
	}
	want := figures{}
	ledgerFigures(t, "court-a", a, want)
	ledgerFigures(t, "court-b", b, want)
	if len(want) < 20 {
		t.Fatalf("the ledgers hold only %d figures: fillLedger wrote too little to test", len(want))
	}

	out := filepath.Join(t.TempDir(), "report")
	mustCLI(t, "report", "--ca", a.site.ServerCA,
		"--ledger", a.srv.URL, "--verifier-key", a.a.VerifierKey,
		"--ledger", tiles, "--verifier-key", b.a.VerifierKey,
		"--out", out)
	page := filepath.Join(out, "index.html")

	dom := chromium(t, page, "--dump-dom")
	got, totals := pageFigures(t, dom)
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if !slices.Equal(got[k], want[k]) {
			t.Errorf("%s: the page shows %q, the ledger holds %q", k, got[k], want[k])
		}
	}
	for k := range got {
		if want[k] == nil {
			t.Errorf("%s: the page shows %q, which no ledger holds", k, got[k])
		}
	}
	var doc struct {
		Months []struct {
			Releases, Refusals, Counted uint64
			Failed                      uint64 `json:"failed_releases"`
		}
		Logs []struct{ Origin string }
	}
	data, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil || json.Unmarshal(data, &doc) != nil {
		t.Fatalf("report.json: %v", err)
	}
	var rel, failed, ref, counted uint64
	for _, m := range doc.Months {
		rel, failed, ref, counted = rel+m.Releases, failed+m.Failed, ref+m.Refusals, counted+m.Counted
	}
	if failed == 0 {
		t.Error("report.json counts no failed release: fillLedger logged some")
	}
	if line := fmt.Sprintf("%d releases (and %d releases that failed), %d refusals logged, %d refusals counted in tallies", rel, failed, ref, counted); !strings.HasPrefix(totals, line) {
		t.Errorf("the page's totals say %q; report.json adds up to %q", totals, line)
	}
	if len(doc.Logs) != 2 {
		t.Errorf("report.json names %d ledgers, want 2", len(doc.Logs))
	}

	shot := filepath.Join(artifactDir(t), "transparency-report.png")
	chromium(t, page, "--window-size=1024,3000", "--hide-scrollbars", "--screenshot="+shot)
	if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
		t.Fatalf("no screenshot: %v", err)
	}
	t.Logf("screenshot of the report: %s", shot)
}

// TestInvariantReportCountsOnlyVerifiedEntries: a ledger read under
// another key, an entry bundle changed after export, or the same ledger
// given twice stops the report with a message that names the cause, and
// no page is written: nothing unchecked or counted twice is published.
func TestInvariantReportCountsOnlyVerifiedEntries(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	a, b := newRigAs(t, "court-a"), newRigAs(t, "court-b")
	defer a.stop()
	defer b.stop()
	fillLedger(t, a, 0)
	dir := t.TempDir()
	tiles := filepath.Join(dir, "court-a-tiles")
	if _, err := a.a.Ledger.Export(tiles); err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "tampered")
	if err := os.CopyFS(tampered, os.DirFS(tiles)); err != nil {
		t.Fatal(err)
	}
	bundles, err := filepath.Glob(filepath.Join(tampered, "tile", "entries", "000*", "*"))
	if err != nil || len(bundles) != 1 {
		t.Fatalf("the first entry bundle: %v %v", bundles, err)
	}
	bundle := bundles[0]
	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte("kind release"))
	if i < 0 {
		t.Fatal("no release in the first bundle")
	}
	copy(data[i:], "kind refusal") // the same length: only the hashes tell
	if err := os.WriteFile(bundle, data, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"another appliance's key", []string{"--ledger", tiles, "--verifier-key", b.a.VerifierKey}, "does not verify"},
		{"a changed entry", []string{"--ledger", tampered, "--verifier-key", a.a.VerifierKey}, "not in the tree"},
		{"the same ledger twice", []string{"--ca", a.site.ServerCA, "--ledger", a.srv.URL, "--verifier-key", a.a.VerifierKey,
			"--ledger", tiles, "--verifier-key", a.a.VerifierKey}, "are the same ledger (custodian/court-a, the same key)"},
		{"no export there", []string{"--ledger", dir, "--verifier-key", a.a.VerifierKey}, "holds no checkpoint"},
		{"a key short", []string{"--ledger", tiles, "--ledger", tampered, "--verifier-key", a.a.VerifierKey}, "each ledger needs its key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "report")
			code, stdout, stderr := cli(t, append(append([]string{"report"}, c.args...), "--out", out)...)
			if code == 0 || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want a failure saying %q\n%s", code, stderr, c.want, stdout)
			}
			if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "*") {
				t.Errorf("the message shows Go's internals: %q", stderr)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("a refused report left %s (%v)", out, err)
			}
		})
	}
}
