package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// TestReportListsOpenedEntries: a real release on swtpm, opened by its
// court, and a refusal opened by whoever submitted it, are listed on the
// report's page and in report.json with the warrant's court, docket and
// serial; the court checked against its roots; the refusal with the words
// that it shows only a submission.
func TestReportListsOpenedEntries(t *testing.T) {
	s := newRevealSetup(t)
	release := filepath.Join(s.dir, "release-opening.json")
	if code, stdout, stderr := s.reveal(t, s.salts, s.p7s, release); code != 0 {
		t.Fatalf("reveal: %d\n%s%s", code, stdout, stderr)
	}
	refused := s.signed(t, "W-elsewhere", "court-z")
	code, stdout, stderr := cli(t, append([]string{"release", "--server", s.dm.client.base, "--warrant", refused, "--out", filepath.Join(s.dir, "z.release.json")}, s.dm.officerArgs()...)...)
	m := keptRE.FindStringSubmatch(stdout)
	if code == 0 || m == nil {
		t.Fatalf("refused release: %d\n%s%s", code, stdout, stderr)
	}
	refusal := filepath.Join(s.dir, "refusal-opening.json")
	if code, stdout, stderr := s.reveal(t, m[2], refused, refusal); code != 0 {
		t.Fatalf("reveal of the refusal: %d\n%s%s", code, stdout, stderr)
	}

	out := filepath.Join(t.TempDir(), "report")
	args := append([]string{"report", "--ledger", s.dm.client.base, "--verifier-key", filepath.Join(s.d.data, "ledger-key.pub"),
		"--opening", release, "--opening", refusal, "--out", out}, s.dm.auditorArgs()...)
	stdout = mustCLI(t, append(args, s.courtFiles(t)...)...)
	if !strings.Contains(stdout, "2 opened entries") {
		t.Errorf("report's summary does not count the opened entries:\n%s", stdout)
	}

	var doc struct {
		Opened []struct {
			Index                       int64
			Kind, Court, Docket, Serial string
			Signers                     []string
			CourtVerified               bool `json:"court_verified"`
			Shows                       string
		}
	}
	readJSON(t, filepath.Join(out, "report.json"), &doc)
	if len(doc.Opened) != 2 {
		t.Fatalf("report.json lists %d opened entries, want 2: %+v", len(doc.Opened), doc.Opened)
	}
	rel, ref := doc.Opened[0], doc.Opened[1]
	if fmt.Sprint(rel.Index) != s.index || rel.Kind != "release" || rel.Court != testCourt || rel.Docket != "CR-1/2026" ||
		rel.Serial != "W-reveal" || len(rel.Signers) == 0 || !rel.CourtVerified || !strings.Contains(rel.Shows, "logged a release of this warrant") {
		t.Errorf("the opened release in report.json: %+v", rel)
	}
	if ref.Kind != "refusal" || ref.Serial != "W-elsewhere" || !strings.Contains(ref.Shows, "shows only that a copy of this warrant was submitted") ||
		!strings.Contains(ref.Shows, "does not show that the court submitted or published it") {
		t.Errorf("the opened refusal in report.json: %+v", ref)
	}

	rows := openedRows(t, filepath.Join(out, "index.html"))
	if len(rows) != 2 || rows[0][1] != s.index || rows[0][5] != "CR-1/2026" || rows[0][6] != "W-reveal" ||
		!strings.HasPrefix(rows[0][9], "yes:") || !strings.Contains(rows[1][10], "shows only that a copy of this warrant was submitted") {
		t.Errorf("the page's opened entries: %q", rows)
	}
	csv, err := os.ReadFile(filepath.Join(out, "opened.csv"))
	if err != nil || !bytes.Contains(csv, []byte("CR-1/2026")) {
		t.Errorf("opened.csv: %v\n%s", err, csv)
	}
}

// openedRows is the text of each cell of the page's opened-entries table,
// parsed as a browser parses it.
func openedRows(t *testing.T, page string) [][]string {
	t.Helper()
	data, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var rows [][]string
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode || n.Data != "table" || attr(n, "id") != "opened-entries" {
			continue
		}
		for tr := range n.Descendants() {
			if tr.Type != html.ElementNode || tr.Data != "tr" || tr.Parent.Data != "tbody" {
				continue
			}
			var row []string
			for td := range tr.ChildNodes() {
				if td.Type == html.ElementNode && td.Data == "td" {
					row = append(row, text(td))
				}
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// TestReportRefusesWrongOpenings: an opening whose salt was changed, one
// of a ledger the report does not read, and one of an entry past the copy
// read stop the report with a message naming the cause; nothing is
// written.
func TestReportRefusesWrongOpenings(t *testing.T) {
	s := newRevealSetup(t)
	good := filepath.Join(s.dir, "opening.json")
	if code, stdout, stderr := s.reveal(t, s.salts, s.p7s, good); code != 0 {
		t.Fatalf("reveal: %d\n%s%s", code, stdout, stderr)
	}
	var o map[string]any
	readJSON(t, good, &o)
	edit := func(name string, change func(map[string]any)) string {
		c := map[string]any{}
		for k, v := range o {
			c[k] = v
		}
		change(c)
		return writeJSON(t, s.dir, name, c)
	}
	wrongSalt := edit("wrong-salt.json", func(c map[string]any) { c["salt"] = strings.Repeat("ab", 32) })
	otherLedger := edit("other-ledger.json", func(c map[string]any) {
		c["checkpoint"] = strings.Replace(c["checkpoint"].(string), "custodian/court-a\n", "custodian/court-z\n", 1)
	})

	// A copy exported before a later release does not hold that release's
	// entry.
	key := filepath.Join(s.d.data, "ledger-key.pub")
	old := filepath.Join(s.dir, "old-export")
	mustCLI(t, append([]string{"ledger", "export", old, "--server", s.dm.client.base, "--verifier-key", key}, s.dm.auditorArgs()...)...)
	later := s.signed(t, "W-later", "court-a")
	code, stdout, stderr := releaseWithPress(t, s.d, s.dm, later, filepath.Join(s.dir, "later.release.json"))
	m := keptRE.FindStringSubmatch(stdout)
	if code != 0 || m == nil {
		t.Fatalf("later release: %d\n%s%s", code, stdout, stderr)
	}
	past := filepath.Join(s.dir, "later-opening.json")
	if code, stdout, stderr := s.reveal(t, m[2], later, past); code != 0 {
		t.Fatalf("reveal of the later release: %d\n%s%s", code, stdout, stderr)
	}

	live := append([]string{"--ledger", s.dm.client.base, "--verifier-key", key}, s.dm.auditorArgs()...)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"a changed salt", slices.Concat(live, []string{"--opening", wrongSalt}), "the salt and warrant do not open the entry's commitment"},
		{"another ledger's opening", slices.Concat(live, []string{"--opening", otherLedger}), "opens an entry of custodian/court-z, and no --verifier-key given is that ledger's"},
		{"an entry past the copy read", []string{"--ledger", old, "--verifier-key", key, "--opening", past}, "read the appliance itself or a fresh export"},
		{"the same opening twice", slices.Concat(live, []string{"--opening", good, "--opening", good}), "both open entry " + s.index},
		{"another court's roots", slices.Concat(live, []string{"--opening", good}, (&revealSetup{c: newCourt(t, time.Now()), dir: t.TempDir()}).courtFiles(t)),
			"does not verify against the court's roots"},
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
	// The good opening with the later copy is listed.
	out := filepath.Join(t.TempDir(), "report")
	mustCLI(t, append(append([]string{"report"}, live...), "--opening", good, "--opening", past, "--out", out)...)
	if rows := openedRows(t, filepath.Join(out, "index.html")); len(rows) != 2 || rows[1][6] != "W-later" {
		t.Errorf("the page's opened entries: %q", rows)
	}
}
