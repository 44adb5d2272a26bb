package warrant

import (
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/custodian-project/custodian/hsm/trust/trusttest"
)

// setField writes v into the named display field of w.
func setField(w *Warrant, field, v string) {
	switch field {
	case "serial":
		w.Serial = v
	case "docket":
		w.Docket = v
	case "court":
		w.Court = v
	case "agency":
		w.Agency = v
	case "official":
		w.Official = v
	case "offence":
		w.Offence = v
	case "targets":
		w.Targets = []string{"alice@example.org", v}
	default:
		panic(field)
	}
}

// TestInvariantDisplayShowsWhatWasSigned: every string a person reads is
// refused, with its field and the code point, when the display could show
// it as something else: invisible, blank, control, bidirectional,
// overlaid, unassigned or private characters, other spaces, and text not
// in NFC (refused, not normalised: the signature covers the bytes).
func TestInvariantDisplayShowsWhatWasSigned(t *testing.T) {
	f := newFixture(t)
	cases := []struct{ field, value, want string }{
		{"court", "District\u3164Court", "U+3164 HANGUL FILLER is not allowed (invisible)"},
		{"court", "\u3164", "U+3164 HANGUL FILLER"},
		{"official", "Judge \u115f", "U+115F HANGUL CHOSEONG FILLER"},
		{"official", "Judge\u1160", "U+1160 HANGUL JUNGSEONG FILLER"},
		{"agency", "Police\uffa0", "U+FFA0 HALFWIDTH HANGUL FILLER"},
		{"docket", "CR\u2800-17", "U+2800 BRAILLE PATTERN BLANK"},
		{"docket", "CR-17\U0001d159", "U+1D159 MUSICAL SYMBOL NULL NOTEHEAD"},
		{"offence", "fraud\u0336", "U+0336 COMBINING LONG STROKE OVERLAY is not allowed (combining overlay"},
		{"offence", "fraud\u0338", "U+0338 COMBINING LONG SOLIDUS OVERLAY"},
		{"offence", "fraud\u20d2", "U+20D2 COMBINING LONG VERTICAL LINE OVERLAY"},
		{"offence", "fraud\u20dd", "U+20DD COMBINING ENCLOSING CIRCLE is not allowed (enclosing mark"},
		{"targets", "alice\u2028bob", "U+2028 LINE SEPARATOR is not allowed (line break)"},
		{"targets", "alice\u2029", "U+2029 PARAGRAPH SEPARATOR"},
		{"targets", "alice\nbob", "U+000A is not allowed (control character)"},
		{"targets", "alice\tbob", "U+0009"},
		{"targets", "alice\u0085bob", "U+0085"},
		{"serial", "W-1\u200b", "U+200B ZERO WIDTH SPACE is not allowed (invisible)"},
		{"serial", "W\u200d1", "U+200D ZERO WIDTH JOINER"},
		{"serial", "W\u20601", "U+2060 WORD JOINER"},
		{"serial", "\ufeffW-1", "U+FEFF ZERO WIDTH NO-BREAK SPACE"},
		{"serial", "W\u00ad1", "U+00AD SOFT HYPHEN"},
		{"serial", "W-1\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"},
		{"agency", "Police\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE is not allowed (bidirectional control"},
		{"agency", "\u2066Police\u2069", "U+2066 LEFT-TO-RIGHT ISOLATE"},
		{"agency", "Police\u061c", "U+061C ARABIC LETTER MARK"},
		{"agency", "Police\u180e", "U+180E MONGOLIAN VOWEL SEPARATOR"},
		{"agency", "A\u034fB", "U+034F COMBINING GRAPHEME JOINER is not allowed (invisible)"},
		{"agency", "A\ufe0f", "U+FE0F VARIATION SELECTOR-16"},
		{"agency", "Police\ue000", "U+E000 is not allowed (private use)"},
		{"agency", "Police\U000f0000", "U+F0000 is not allowed (private use)"},
		{"agency", "Police\u0378", "U+0378 is not allowed (unassigned)"},
		{"agency", "Police\ufdd0", "U+FDD0 is not allowed (unassigned)"},
		{"agency", "Police\ufffd", "U+FFFD REPLACEMENT CHARACTER"},
		{"official", "Judge\u00a0Ada", "U+00A0 NO-BREAK SPACE is not allowed (white space other than U+0020 SPACE)"},
		{"official", "Judge\u3000Ada", "U+3000 IDEOGRAPHIC SPACE"},
		{"official", "Judge\u2009Ada", "U+2009 THIN SPACE"},
		{"official", " Judge", "U+0020 SPACE at the start or end"},
		{"official", "Judge ", "U+0020 SPACE at the start or end"},
		{"official", "Judge  Ada", "U+0020 SPACE twice in a row"},
		{"official", "Jose\u0301", "U+0065 U+0301 is not allowed (not in Unicode NFC; write it as U+00E9)"},
		{"court", "Cour d'appel de Gene\u0300ve", "U+0065 U+0300"},
		{"official", "\u0301Ada", "U+0301 COMBINING ACUTE ACCENT is not allowed (a combining mark with no character"},
		{"official", "Ada \u0301", "U+0301 COMBINING ACUTE ACCENT"},
		{"official", "Adx\u0301\u0302\u0303\u0304\u0306", "U+0306 COMBINING BREVE is not allowed (more than 4 combining marks"},
	}
	for _, c := range cases {
		t.Run(c.field+" "+c.want, func(t *testing.T) {
			w := f.warrant()
			setField(w, c.field, c.value)
			_, err := Parse(mustJSON(t, w), 0)
			if ReasonOf(err) != ReasonBadText || !strings.Contains(err.Error(), c.field+": "+c.want) {
				t.Fatalf("got %v, want reason %s with %q", err, ReasonBadText, c.field+": "+c.want)
			}
			if _, err := w.Marshal(0); ReasonOf(err) != ReasonBadText {
				t.Fatalf("warrant new would write it: %v", err)
			}
		})
	}
}

// TestDisplayTextAcceptsNamesInAnyScript: the rules refuse tricks, not
// languages: names (not targets, TestInvariantTargetsCannotLookAlike) may
// be in any script.
func TestDisplayTextAcceptsNamesInAnyScript(t *testing.T) {
	f := newFixture(t)
	for _, v := range []string{
		"Cour d'appel de Genève",
		"Landgericht Düsseldorf, Große Strafkammer",
		"José Müller-Łukasiewicz",
		"Окружной суд Москвы",
		"Πρωτοδικείο Αθηνών",
		"東京地方裁判所",
		"서울중앙지방법원",
		"محكمة القاهرة",
		"בית משפט השלום",
		"सर्वोच्च न्यायालय",
		"Tòa án nhân dân Hà Nội",
		"O'Brien-Smith, J. (ret.) ⚖ №17 § 2",
	} {
		for _, field := range []string{"court", "official", "offence"} {
			w := f.warrant()
			setField(w, field, v)
			if _, err := Parse(mustJSON(t, w), 0); err != nil {
				t.Errorf("%s %q: %v", field, v, err)
			}
		}
	}
}

// TestInvariantCertificateNamesShownEscaped: a signer name that breaks the
// display rules does not reach the display as it is; its characters
// outside printable ASCII are shown as <U+XXXX>. A clean name is shown as
// it is, in any script.
func TestInvariantCertificateNamesShownEscaped(t *testing.T) {
	f := newFixture(t)
	sign := func(name string) string {
		key := trusttest.ECKey(t, elliptic.P256())
		cert := f.root.Judge(t, name, key.Public(), testNow)
		p7s := f.sign(t, f.content(t, f.warrant()), Signer{Key: key, Chain: []*x509.Certificate{cert}})
		w, signers, err := Inspect(p7s)
		if err != nil {
			t.Fatal(err)
		}
		return Summary(w, signers)
	}
	got := sign("Judge Ada\u202e ecalevoL")
	if !strings.Contains(got, "Judge Ada<U+202E> ecalevoL (") || strings.ContainsRune(got, '\u202e') {
		t.Errorf("summary:\n%s", got)
	}
	got = sign("Judge\u3164Müller")
	if !strings.Contains(got, "Judge<U+3164>M<U+00FC>ller (") || strings.ContainsRune(got, '\u3164') {
		t.Errorf("summary:\n%s", got)
	}
	got = sign("Richterin Jürgen Groß")
	if !strings.Contains(got, "Signed by:  Richterin Jürgen Groß (issued by ") {
		t.Errorf("summary:\n%s", got)
	}
}

// FuzzDisplayText checks what the display rules accept against the
// Unicode tables directly: nothing of a refused class gets through.
func FuzzDisplayText(f *testing.F) {
	for _, s := range []string{"District Court", "Genève", "Gene\u0300ve", "a\u3164b", "\u202e", "x\u0336", "東京", "a  b", " a", "\u0301", "Ada\u200b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := checkDisplayText("f", s); err != nil {
			var te *textError
			if !errors.As(error(err), &te) || !strings.HasPrefix(err.Error(), "f: ") {
				t.Fatalf("refusal does not name the field: %v", err)
			}
			if esc := DisplayName(s); !printableASCII(esc) {
				t.Fatalf("escaped name %q is not printable ASCII", esc)
			}
			return
		}
		if DisplayName(s) != s {
			t.Fatalf("an accepted name is shown escaped")
		}
		if !utf8.ValidString(s) || !norm.NFC.IsNormalString(s) {
			t.Fatalf("accepted %q: not valid NFC", s)
		}
		if strings.HasPrefix(s, " ") || strings.HasSuffix(s, " ") || strings.Contains(s, "  ") {
			t.Fatalf("accepted %q: spaces", s)
		}
		marks := 0
		for i, r := range s {
			if r != ' ' && !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S) {
				t.Fatalf("accepted %U: category", r)
			}
			if unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector, unicode.Bidi_Control, unicode.Me) {
				t.Fatalf("accepted %U: invisible, bidi or enclosing", r)
			}
			if r == 0x2800 || r == 0x3164 || r == 0x115f || r == 0x1160 || r == 0xffa0 || r == 0xfffd {
				t.Fatalf("accepted %U: blank", r)
			}
			if ccc := norm.NFD.PropertiesString(string(r)).CCC(); ccc == 1 {
				t.Fatalf("accepted %U: overlay", r)
			}
			if unicode.Is(unicode.M, r) {
				marks++
				if i == 0 || marks > maxMarks {
					t.Fatalf("accepted %U: mark without base or too many", r)
				}
			} else {
				marks = 0
			}
		}
	})
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// TestInvariantTargetsCannotLookAlike: a target decides which envelopes
// are released, so two targets that read alike must be one: a target
// with a Cyrillic "а" (U+0430) for the Latin "a", or any other character
// outside printable ASCII, is refused, naming the code point; the ASCII
// target beside it passes.
func TestInvariantTargetsCannotLookAlike(t *testing.T) {
	f := newFixture(t)
	for _, lookalike := range []string{"\u0430lice@example.org", "alice@ex\u0430mple.org", "b\u043eb", "\uff41lice", "+1555\u0660100"} {
		w := f.warrant()
		w.Targets = []string{"alice@example.org", lookalike}
		_, err := Parse(mustJSON(t, w), 0)
		if ReasonOf(err) != ReasonBadText || !strings.Contains(err.Error(), "U+") || strings.Contains(err.Error(), lookalike) {
			t.Errorf("target %q: %v, want bad_text naming the code point, the target escaped", lookalike, err)
		}
		if _, err := w.Marshal(0); ReasonOf(err) != ReasonBadText {
			t.Errorf("warrant new would write target %q: %v", lookalike, err)
		}
	}
}
