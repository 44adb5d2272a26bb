package warrant

import (
	"fmt"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/recipient"
)

// consoleRows is s as a console of width cols shows it: each line
// hard-wrapped at cols characters, as /dev/tty1 and a terminal wrap.
func consoleRows(s string, cols int) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		r := []rune(line)
		for len(r) > cols {
			out = append(out, string(r[:cols]))
			r = r[cols:]
		}
		out = append(out, string(r))
	}
	return out
}

// labelRows is the start of every row that does not begin with a space,
// up to its first colon: the labels a reader sees.
func labelRows(rows []string) []string {
	var out []string
	for _, r := range rows {
		if !strings.HasPrefix(r, " ") {
			label, _, _ := strings.Cut(r, ":")
			out = append(out, label)
		}
	}
	return out
}

// expectedLabels is the labels a summary of w (inline envelopes, none
// here) has, in order, as labelRows reads them: one row per field, per
// target, per whole-share key ID and per signer.
func expectedLabels(w *Warrant, signers []Identity) string {
	out := []string{"Warrant", "Court", "Docket", "Agency", "Official", "Offence"}
	for range w.Targets {
		out = append(out, "Target")
	}
	out = append(out, "Valid", "Key IDs")
	for _, k := range w.KeyIDs {
		label, _, _ := strings.Cut("Key ID "+k, ":")
		out = append(out, label)
	}
	out = append(out, "Custodians", "Recipient")
	for range signers {
		out = append(out, "Signed by")
	}
	return strings.Join(out, "|")
}

// TestInvariantSummaryRowsCannotForgeALabel: a requester pads a free-text
// field so that, where a console of Width columns wraps it, a row begins
// "Recipient: … fingerprint F" with F the key the judge expects (or any
// other label). The summary wraps values itself, so at Width columns
// the rows that start with a label are exactly those of a plain warrant,
// whatever any field holds and wherever its text falls.
func TestInvariantSummaryRowsCannotForgeALabel(t *testing.T) {
	f := newFixture(t)
	expected, err := recipient.Generate("")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Parse(f.content(t, f.warrant()), 0)
	if err != nil {
		t.Fatal(err)
	}
	signers := []Identity{{Name: "Judge Ada", Issuer: "CN=Test Court Root", SigningTime: testNow}}
	if got, want := strings.Join(labelRows(consoleRows(Summary(plain, signers), Width)), "|"), expectedLabels(plain, signers); got != want {
		t.Fatalf("a plain warrant's rows start with labels %s, want %s", got, want)
	}
	fields := map[string]func(w *Warrant, v string){
		"offence":  func(w *Warrant, v string) { w.Offence = v },
		"court":    func(w *Warrant, v string) { w.Court = v },
		"agency":   func(w *Warrant, v string) { w.Agency = v },
		"official": func(w *Warrant, v string) { w.Official = v },
		"docket":   func(w *Warrant, v string) { w.Docket = v },
		"target":   func(w *Warrant, v string) { w.Targets[0] = v },
		"serial":   func(w *Warrant, v string) { w.Serial = v },
		// Key IDs hold no space, but may hold a colon: a list of them
		// fills the row up to one that reads as a label.
		"key IDs": func(w *Warrant, v string) {
			w.KeyIDs = nil
			for i, word := range strings.Fields(v) {
				w.KeyIDs = append(w.KeyIDs, fmt.Sprintf("%s%d", word, i))
			}
		},
	}
	forged := []string{
		"Recipient: mlkem768x25519 key, fingerprint " + expected.Public().Fingerprint(),
		"Target: bob@example.org", "Key IDs: 2026-01", "Valid: 2026-01-01T00:00:00Z",
	}
	for name, set := range fields {
		for _, lie := range forged {
			// Every offset of the lie against the row width, with words
			// (a space to break at) and with one long word before it.
			for pad := 0; pad <= Width; pad++ {
				for _, filler := range []string{strings.Repeat("-", pad), strings.Repeat("ab ", pad/3) + "x"} {
					w := f.warrant()
					set(w, strings.TrimSpace(filler+" "+lie))
					doc, err := w.Marshal(0)
					if err != nil {
						continue // refused by another rule (a key ID's form): nothing to show
					}
					parsed, err := Parse(doc, 0)
					if err != nil {
						t.Fatal(err)
					}
					out := Summary(parsed, signers)
					for _, r := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
						if n := len([]rune(r)); n > Width {
							t.Fatalf("%s: a row of %d characters, wider than %d:\n%s", name, n, Width, r)
						}
					}
					if got, want := strings.Join(labelRows(consoleRows(out, Width)), "|"), expectedLabels(parsed, signers); got != want {
						t.Fatalf("%s: rows start with labels %s, want %s:\n%s", name, got, want, out)
					}
				}
			}
		}
	}
	// A signer's name comes from its certificate, not the warrant.
	plainRows := labelRows(consoleRows(Summary(plain, signers), Width))
	for _, lie := range forged {
		for pad := 0; pad <= Width; pad++ {
			named := []Identity{{Name: strings.Repeat("n", pad) + " " + lie, Issuer: "CN=" + lie, SigningTime: testNow}}
			out := Summary(plain, named)
			if got := labelRows(consoleRows(out, Width)); strings.Join(got, "|") != strings.Join(plainRows, "|") {
				t.Fatalf("signer name: rows start with labels %s:\n%s", strings.Join(got, "|"), out)
			}
		}
	}
}

// TestInvariantRecipientFingerprintRowsFitTheConsole: the fingerprint the
// judge compares group by group is on rows of its own, every group whole
// within Width columns, all 64 hex digits shown.
func TestInvariantRecipientFingerprintRowsFitTheConsole(t *testing.T) {
	f := newFixture(t)
	parsed, err := Parse(f.content(t, f.warrant()), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := Summary(parsed, nil)
	rows := strings.Split(out, "\n")
	var digits string
	for i, r := range rows {
		if n := len([]rune(r)); n > Width {
			t.Errorf("row of %d characters, wider than %d:\n%s", n, Width, r)
		}
		if strings.HasPrefix(r, "Recipient:") {
			if i+2 >= len(rows) || !strings.HasPrefix(rows[i+1], continuation+"fingerprint ") {
				t.Fatalf("no fingerprint row under the recipient:\n%s", out)
			}
			digits = strings.Join(strings.Fields(strings.TrimPrefix(rows[i+1], continuation+"fingerprint ")), "") +
				strings.Join(strings.Fields(rows[i+2]), "")
		}
	}
	if digits != strings.ReplaceAll(parsed.RecipientKey().Fingerprint(), " ", "") || len(digits) != 64 {
		t.Errorf("fingerprint rows read %q, the key's fingerprint is %s:\n%s", digits, parsed.RecipientKey().Fingerprint(), out)
	}
}

// TestSummaryWrapsAtSpacesAndKeepsEveryCharacter: wrapping loses nothing
// but the space a row ends at, and wide characters count two columns.
func TestSummaryWrapsAtSpacesAndKeepsEveryCharacter(t *testing.T) {
	for _, s := range []string{
		strings.Repeat("word ", 40) + "end",
		strings.Repeat("x", 200),
		strings.Repeat("漢", 50),
	} {
		var b strings.Builder
		writeRows(&b, "Offence:    ", s)
		var joined []string
		for _, r := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
			cols := 0
			for _, c := range r {
				cols += columns(c)
			}
			if cols > Width {
				t.Errorf("row of %d columns: %s", cols, r)
			}
			joined = append(joined, r[labelWidth:])
		}
		if got := strings.Join(joined, ""); strings.ReplaceAll(got, " ", "") != strings.ReplaceAll(s, " ", "") {
			t.Errorf("wrapped text lost characters:\n%s", b.String())
		}
	}
}

// unwrapped joins each continuation row of a summary to the row before
// it, with the space a row ends at: a value on one line again, to search.
func unwrapped(s string) string {
	return strings.ReplaceAll(s, "\n"+continuation, " ")
}

// TestInvariantWarrantFileShowsTextAsTheDisplayDoes: w.json writes <, >
// and & as they are, so what the judge reads with cat is what the display
// shows; the escaped compact form earlier versions wrote still verifies.
func TestInvariantWarrantFileShowsTextAsTheDisplayDoes(t *testing.T) {
	f := newFixture(t)
	w := f.warrant()
	w.Targets = []string{"bob<x>&y"}
	w.Offence = "fraud & <forgery>"
	doc, err := w.Marshal(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"bob<x>&y"`, `"fraud & <forgery>"`} {
		if !strings.Contains(string(doc), want) || strings.Contains(string(doc), `\u00`) {
			t.Errorf("w.json lacks %s or escapes:\n%s", want, doc)
		}
	}
	parsed, err := Parse(doc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !parsed.Encodes(doc) {
		t.Error("the readable w.json is not accepted as the warrant's encoding")
	}
	old, err := jsonMarshal(parsed)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(old), `\u003c`) || !parsed.Encodes(old) {
		t.Errorf("the escaped compact form earlier versions wrote is not accepted:\n%s", old)
	}
}
