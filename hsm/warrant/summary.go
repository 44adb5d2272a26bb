package warrant

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/width"
)

// Inspect decodes a signed warrant and checks each signature against the
// certificate it names, with no trust decision: no roots, CRLs, policy or
// clock. It is for showing a warrant, never for acting on one.
func Inspect(p7s []byte) (*Warrant, []Identity, error) {
	m, err := parseMessage(p7s)
	if err != nil {
		return nil, nil, err
	}
	w, err := Parse(m.content, 0)
	if err != nil {
		return nil, nil, err
	}
	ids := make([]Identity, len(m.signers))
	for i, s := range m.signers {
		ids[i] = identityOf(s)
	}
	return w, ids, nil
}

// Summary is [SummaryWithList] for the warrant's inline envelopes, or,
// for a warrant that names a list, without the list at hand.
func Summary(w *Warrant, signers []Identity) string { return SummaryWithList(w, nil, signers) }

// SummaryWithList is the text the court officer reads on the device before
// pressing the button: every field that decides what is released, to
// whom, and who signed. A warrant naming envelopes gets an "Envelopes"
// line with their number per target (from list, the checked list the
// warrant names, or its inline envelopes); one naming a list also gets a
// "List" line with its count and tree hash. Every key ID that releases a
// whole share (wholeShares) gets a line saying so. The time span a release covers
// is the warrant's window ("Valid"): envelopes carry no sealing time.
// Warrant fields passed the display rules in Parse (text.go), so they are
// shown as signed; names from certificates are shown escaped when they
// break those rules (displayName).
//
// Every row fits [Width] columns: the summary wraps values itself, and
// each continuation row begins with labelWidth spaces. A console that
// wraps a long row would start the overflow at column 0, where a field's
// text could read as a label ("Recipient: … fingerprint" of another key);
// here only the summary's own labels ever start a row.
func SummaryWithList(w *Warrant, list *EnvelopeList, signers []Identity) string {
	var b strings.Builder
	line := func(label, value string) { b.WriteString(row(label+":", value)) }
	line("Warrant", w.Serial)
	line("Court", w.Court)
	line("Docket", w.Docket)
	line("Agency", w.Agency)
	line("Official", w.Official)
	line("Offence", w.Offence)
	for _, t := range w.Targets {
		line("Target", t)
	}
	line("Valid", w.NotBefore+" to "+w.NotAfter)
	line("Key IDs", strings.Join(w.KeyIDs, ", "))
	switch {
	case list != nil:
		line("Envelopes", envelopeCounts(w, list.Entries))
	case len(w.Envelopes) != 0:
		line("Envelopes", envelopeCounts(w, w.Envelopes))
	}
	if d := w.EnvelopeList; d != nil {
		line("List", fmt.Sprintf("%s entries, tree hash %x…", Thousands(d.Count), d.TreeHash[:8]))
	}
	if w.EnvelopeList != nil && list == nil {
		writeRows(&b, "", "A key ID the list names no envelopes of releases a WHOLE SHARE; show the warrant with its list to see which")
	}
	for _, k := range wholeShares(w, list) {
		writeRows(&b, "", "Key ID "+k+": WHOLE SHARE — opens every message of that key ID")
	}
	line("Custodians", strings.Join(w.Custodians, ", "))
	k := w.RecipientKey()
	line("Recipient", k.KEM()+" key")
	for i, digits := range k.FingerprintRows() {
		lead := "fingerprint "
		if i > 0 {
			lead = strings.Repeat(" ", len(lead))
		}
		b.WriteString(continuation + lead + digits + "\n")
	}
	for _, s := range signers {
		line("Signed by", SignedBy(s))
	}
	return b.String()
}

// Width is the number of columns every summary row fits: the appliance's
// console (/dev/tty1 in its 80x25 text mode) and a default terminal.
const Width = 80

// labelWidth is the label column ("Custodians: "); values start after it.
const labelWidth = 12

// continuation starts every row after a value's first: blank where labels
// stand, so no text of a value can begin a row.
var continuation = strings.Repeat(" ", labelWidth)

// row is value after label (padded to the label column) as the summary
// writes its rows: wrapped to Width columns, continuation rows indented.
func row(label, value string) string {
	var b strings.Builder
	writeRows(&b, fmt.Sprintf("%-*s", labelWidth, label), value)
	return b.String()
}

// writeRows writes value after lead (a label padded to labelWidth, or ""
// for a note that starts at column 0), wrapped to Width columns:
// at a space where one falls in the row (the space is not shown), else
// within a word too long for a row. Rows after the first are indented by
// continuation.
func writeRows(b *strings.Builder, lead, value string) {
	first := true
	for {
		cols := Width - labelWidth
		if first {
			cols = Width - len(lead) // lead is ASCII: one column a byte
		}
		row, rest := cutRow(value, cols)
		if first {
			b.WriteString(lead)
		} else {
			b.WriteString(continuation)
		}
		b.WriteString(row)
		b.WriteByte('\n')
		if rest == "" {
			return
		}
		value, first = rest, false
	}
}

// cutRow splits s after at most cols columns, preferring the last space
// within them; the space itself is dropped.
func cutRow(s string, cols int) (row, rest string) {
	used, lastSpace := 0, -1
	for i, r := range s {
		c := columns(r)
		if used+c > cols {
			switch {
			case r == ' ':
				return s[:i], s[i+1:]
			case lastSpace > 0:
				return s[:lastSpace], s[lastSpace+1:]
			}
			return s[:i], s[i:]
		}
		if r == ' ' {
			lastSpace = i
		}
		used += c
	}
	return s, ""
}

// columns is how many columns a terminal gives r: none for a combining
// mark (it sits on the character before it), two for East Asian wide and
// fullwidth characters, one otherwise. Overestimating is safe (a row ends
// early); underestimating is not, so wide is counted as two everywhere.
func columns(r rune) int {
	switch {
	case r < 0x300:
		return 1
	case unicode.In(r, unicode.Mn, unicode.Me):
		return 0
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

// wholeShares returns the key IDs whose release is a whole share: those
// the warrant names no envelopes of. The appliance releases a scoped key
// ID only for envelopes the warrant names and refuses to name envelopes
// for a share-mode key ID (it would misstate the release), so a key ID
// without envelopes is share-mode, and its share opens every envelope
// ever sealed under it: the officer must read that, not only the count of
// the envelopes named for other key IDs. For a warrant naming a list
// that is not at hand none is returned: only the list tells (the summary
// says so instead).
func wholeShares(w *Warrant, list *EnvelopeList) []string {
	refs := w.Envelopes
	if list != nil {
		refs = list.Entries
	}
	named := make(map[string]bool, len(w.KeyIDs))
	for _, e := range refs {
		named[e.KeyID] = true
	}
	var out []string
	for _, k := range w.KeyIDs {
		if !named[k] && (list != nil || w.EnvelopeList == nil) {
			out = append(out, k)
		}
	}
	return out
}

// envelopeCounts is `3 ("alice@example.org": 2, "bob": 1)`: the number of
// envelopes, then per target in the order of the warrant's targets. The
// targets are quoted: a target may itself hold ": " and ", ".
func envelopeCounts(w *Warrant, refs []EnvelopeRef) string {
	n := make(map[string]int, len(w.Targets))
	for _, e := range refs {
		n[e.Target]++
	}
	var per []string
	for _, t := range w.Targets {
		if n[t] != 0 {
			per = append(per, fmt.Sprintf("%q: %s", t, Thousands(n[t])))
		}
	}
	return fmt.Sprintf("%s (%s)", Thousands(len(refs)), strings.Join(per, ", "))
}

// Thousands writes n with a comma between groups of three digits
// ("10,000"), as people read counts.
func Thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + Thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// SignedBy is what a summary says of one signer: "NAME (issued by ISSUER)
// at TIME", the issuer labelled so that nobody takes it for a second
// signer.
func SignedBy(s Identity) string {
	return fmt.Sprintf("%s (issued by %s) at %s", DisplayName(s.Name), DisplayName(s.Issuer), s.SigningTime.UTC().Format("2006-01-02 15:04:05Z"))
}

// Content returns the signed JSON of a warrant, with no check of its
// signatures or of the document: for a client to compute the Digest that a
// release package must carry.
func Content(p7s []byte) ([]byte, error) {
	m, err := parseMessage(p7s)
	if err != nil {
		return nil, err
	}
	return m.content, nil
}
