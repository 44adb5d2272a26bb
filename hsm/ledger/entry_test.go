package ledger_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// unverifiedEntry is a well-formed tally entry.
func unverifiedEntry() ledger.Entry {
	return ledger.Entry{Time: t0, Kind: ledger.KindUnverified, Counter: 9, Outcome: ledger.OutcomeRefused,
		Counts: map[string]uint64{"malformed_cms": 4, "busy": 12, "bad_signature": 3}}
}

// TestUnverifiedEntryHasOneCanonicalForm: the tally is its own line,
// reasons in byte order, and the parser takes back exactly what Marshal
// wrote and nothing else.
func TestUnverifiedEntryHasOneCanonicalForm(t *testing.T) {
	e := unverifiedEntry()
	data, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(data), "\ncounts bad_signature=3 busy=12 malformed_cms=4\n") {
		t.Fatalf("encoding:\n%s", data)
	}
	got, err := ledger.ParseEntry(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Counts) != 3 || got.Counts["busy"] != 12 || got.Counts["bad_signature"] != 3 || got.Counts["malformed_cms"] != 4 {
		t.Fatalf("parsed counts %v", got.Counts)
	}
	for name, edit := range map[string]func(string) string{
		"unsorted": func(s string) string {
			return strings.Replace(s, "bad_signature=3 busy=12", "busy=12 bad_signature=3", 1)
		},
		"leading zero":      func(s string) string { return strings.Replace(s, "busy=12", "busy=012", 1) },
		"zero count":        func(s string) string { return strings.Replace(s, "busy=12", "busy=0", 1) },
		"duplicate reason":  func(s string) string { return strings.Replace(s, "busy=12", "busy=12 busy=12", 1) },
		"double space":      func(s string) string { return strings.Replace(s, " busy", "  busy", 1) },
		"no counts line":    func(s string) string { return s[:strings.Index(s, "counts ")] },
		"empty counts":      func(s string) string { return s[:strings.Index(s, "counts ")] + "counts \n" },
		"not a code":        func(s string) string { return strings.Replace(s, "busy=12", "Busy=12", 1) },
		"negative":          func(s string) string { return strings.Replace(s, "busy=12", "busy=-1", 1) },
		"overflow":          func(s string) string { return strings.Replace(s, "busy=12", "busy=18446744073709551616", 1) },
		"counts on refusal": func(s string) string { return strings.Replace(s, "kind unverified", "kind refusal", 1) },
		"reason set":        func(s string) string { return strings.Replace(s, "reason -", "reason busy", 1) },
	} {
		if e, err := ledger.ParseEntry([]byte(edit(string(data)))); err == nil {
			t.Errorf("%s: accepted %+v", name, e)
		}
	}
	for name, edit := range map[string]func(*ledger.Entry){
		"no counts":            func(e *ledger.Entry) { e.Counts = nil },
		"zero count":           func(e *ledger.Entry) { e.Counts["busy"] = 0 },
		"reason with a space":  func(e *ledger.Entry) { e.Counts["a b"] = 1 },
		"reason with an equal": func(e *ledger.Entry) { e.Counts["a=b"] = 1 },
		"commitment":           func(e *ledger.Entry) { e.Commitment = make([]byte, 32) },
		"outcome ok":           func(e *ledger.Entry) { e.Outcome = ledger.OutcomeOK },
		"key ID":               func(e *ledger.Entry) { e.KeyID = "2026-11" },
		"counts on a release": func(e *ledger.Entry) {
			e.Kind, e.Outcome = ledger.KindRelease, ledger.OutcomeOK
		},
		"too many reasons": func(e *ledger.Entry) {
			for i := range 64 {
				e.Counts[strings.Repeat("r", i+1)] = 1
			}
		},
	} {
		bad := unverifiedEntry()
		edit(&bad)
		if data, err := bad.Marshal(); err == nil {
			t.Errorf("%s: encoded\n%s", name, data)
		}
	}
	// Every other kind keeps its seven fields.
	r := ledger.Entry{Time: t0, Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "busy"}
	data, err = r.Marshal()
	if err != nil || bytes.Contains(data, []byte("counts")) || bytes.Count(data, []byte("\n")) != 8 {
		t.Fatalf("refusal entry: %v\n%s", err, data)
	}
}
