package warrant

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/rangetable"
	"golang.org/x/text/unicode/runenames"
)

// The display rules: a string a person reads on the device or in `warrant
// show` must render as exactly one thing. The signed bytes are what the
// judge signed, so a string that breaks a rule is refused, never rewritten.
// Every string of a warrant follows them (docs/warrant.md section 1):
//
//   - Unicode NFC: "é" is U+00E9, not "e" + U+0301, so equal-looking text
//     is equal text.
//   - Only letters, marks, digits, punctuation and symbols (general
//     categories L, M, N, P, S) assigned in the Unicode version of the
//     tables (15.0), and U+0020 SPACE. Refused: control characters (Cc),
//     format characters (Cf: bidirectional controls, zero-width
//     characters, soft hyphen), line and paragraph separators (Zl, Zp),
//     every other space (Zs: no-break, em, ideographic spaces), private
//     use (Co), surrogates (Cs) and unassigned code points.
//   - No Default_Ignorable_Code_Point (fonts draw nothing for them: Hangul
//     fillers, the combining grapheme joiner, variation selectors) and no
//     character that renders blank (BRAILLE PATTERN BLANK and the like).
//   - No combining overlay (canonical combining class 1: U+0334–U+0338,
//     U+20D2…, which strike through the letter before them) and no
//     enclosing mark (Me); no combining mark at the start or after a space
//     (it would sit on whatever the display draws before it), and at most
//     maxMarks combining marks on one character (stacks spill into the
//     lines above and below).
//   - No leading or trailing space and no two spaces in a row.
const maxMarks = 4

// assigned is every code point assigned in the tables' Unicode version.
var assigned = rangetable.Assigned(unicode.Version)

// blank are characters that are not default-ignorable but render as
// nothing, or as a box that hides what was meant.
var blank = map[rune]bool{
	0x2800:  true, // BRAILLE PATTERN BLANK
	0x16FE4: true, // KHITAN SMALL SCRIPT FILLER
	0x1D159: true, // MUSICAL SYMBOL NULL NOTEHEAD
	0xFFFC:  true, // OBJECT REPLACEMENT CHARACTER
	0xFFFD:  true, // REPLACEMENT CHARACTER: text that was not UTF-8 once
}

// textError is a string that breaks a display rule.
type textError struct {
	field string
	what  string // the code point(s), e.g. "U+3164 HANGUL FILLER"
	why   string
}

func (e *textError) Error() string {
	return fmt.Sprintf("%s: %s is not allowed (%s)", e.field, e.what, e.why)
}

// checkDisplayText applies the display rules to v, the value of field.
func checkDisplayText(field, v string) *textError {
	if !utf8.ValidString(v) {
		return &textError{field, "invalid UTF-8", "not text"}
	}
	marks := 0
	prev := rune(-1)
	for i, r := range v {
		if why := refusedRune(r); why != "" {
			return &textError{field, codePoint(r), why}
		}
		switch {
		case r == ' ' && (i == 0 || i == len(v)-1):
			return &textError{field, "U+0020 SPACE at the start or end", "invisible"}
		case r == ' ' && prev == ' ':
			return &textError{field, "U+0020 SPACE twice in a row", "looks like one"}
		case unicode.Is(unicode.M, r) && (prev == -1 || prev == ' '):
			return &textError{field, codePoint(r), "a combining mark with no character to sit on"}
		case unicode.Is(unicode.M, r):
			if marks++; marks > maxMarks {
				return &textError{field, codePoint(r), fmt.Sprintf("more than %d combining marks on one character", maxMarks)}
			}
		default:
			marks = 0
		}
		prev = r
	}
	if n := norm.NFC.QuickSpanString(v); n < len(v) {
		seg := v[n:]
		seg = seg[:norm.NFC.NextBoundaryInString(seg, true)]
		return &textError{field, codePoints(seg), "not in Unicode NFC; write it as " + codePoints(norm.NFC.String(seg))}
	}
	return nil
}

// checkTargetASCII refuses a target with any character outside printable
// ASCII. Targets decide which envelopes are released, and letters of
// other scripts look like Latin ones (Cyrillic "а" U+0430 for "a"): two
// targets that read the same to the judge and the officer must be the
// same target. Names (court, official) stay in any script: they decide
// nothing the appliance releases.
func checkTargetASCII(t string) error {
	for _, r := range t {
		if r < 0x20 || r > 0x7e {
			return refuse(ReasonBadText, "target %s holds %s: targets are printable ASCII only, so that no letter of another script can pass for a Latin one; write a domain in its ASCII form (xn--…), an account by its ASCII identifier",
				escapeNonASCII(t), codePoint(r))
		}
	}
	return nil
}

// refusedRune says why r may not appear in a displayed string, or "" if
// it may.
func refusedRune(r rune) string {
	switch {
	case r >= 0x21 && r < 0x7f, r == ' ':
		return "" // printable ASCII, the common case
	case unicode.IsControl(r):
		return "control character"
	case unicode.In(r, unicode.Zl, unicode.Zp):
		return "line break"
	case unicode.Is(unicode.Zs, r):
		return "white space other than U+0020 SPACE"
	case unicode.Is(unicode.Bidi_Control, r):
		return "bidirectional control: it reorders the text around it"
	case unicode.In(r, unicode.Cf, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector), blank[r]:
		return "invisible"
	case unicode.Is(unicode.Co, r):
		return "private use"
	case !unicode.Is(assigned, r), unicode.Is(unicode.Cs, r):
		return "unassigned"
	case unicode.Is(unicode.Me, r):
		return "enclosing mark: it draws over the character before it"
	case norm.NFC.PropertiesString(string(r)).CCC() == 1:
		return "combining overlay: it strikes through the character before it"
	}
	return ""
}

// codePoint names r, e.g. "U+3164 HANGUL FILLER".
func codePoint(r rune) string {
	if name := runenames.Name(r); name != "" && !strings.HasPrefix(name, "<") {
		return fmt.Sprintf("%U %s", r, name)
	}
	return fmt.Sprintf("%U", r)
}

// codePoints lists the code points of s, e.g. "U+0065 U+0301".
func codePoints(s string) string {
	var out []string
	for _, r := range s {
		out = append(out, fmt.Sprintf("%U", r))
	}
	return strings.Join(out, " ")
}

// DisplayName is a name from a certificate as the summary (and the trust
// admin's listing) shows it. The
// court PKI vouches for certificate names, but nothing makes them follow
// the display rules, and the warrant's signature does not cover them; so a
// name that breaks a rule is shown with every character outside printable
// ASCII escaped as <U+XXXX>, which shows what is there.
func DisplayName(s string) string {
	if checkDisplayText("", s) == nil {
		return s
	}
	return escapeNonASCII(s)
}

// escapeNonASCII writes every character of s outside printable ASCII as
// <U+XXXX>.
func escapeNonASCII(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "<%U>", r)
		}
	}
	return b.String()
}
