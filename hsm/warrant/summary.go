package warrant

import (
	"fmt"
	"strconv"
	"strings"
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
func SummaryWithList(w *Warrant, list *EnvelopeList, signers []Identity) string {
	var b strings.Builder
	line := func(label, value string) { fmt.Fprintf(&b, "%-11s %s\n", label+":", value) }
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
		b.WriteString("A key ID the list names no envelopes of releases a WHOLE SHARE; show the warrant with its list to see which\n")
	}
	for _, k := range wholeShares(w, list) {
		fmt.Fprintf(&b, "Key ID %s: WHOLE SHARE — opens every message of that key ID\n", k)
	}
	line("Custodians", strings.Join(w.Custodians, ", "))
	line("Recipient", RecipientLine(w))
	for _, s := range signers {
		line("Signed by", SignedBy(s))
	}
	return b.String()
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

// RecipientLine names the recipient key by its KEM and fingerprint; the
// full key is in the warrant and in the ledger commitment.
func RecipientLine(w *Warrant) string {
	k := w.RecipientKey()
	return k.KEM() + " key, fingerprint " + k.Fingerprint()
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
