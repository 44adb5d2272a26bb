package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/attest"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// strictFormat is one JSON format a party other than the reader writes,
// with a valid document (made by the real tools) and its parser.
type strictFormat struct {
	name  string
	doc   []byte
	parse func(t *testing.T, doc []byte) error
}

// TestInvariantEveryStrictFormatMatchesFieldNamesExactly runs the demo
// (real swtpm custodians, ceremony, warrant, releases) and, for every
// strict JSON format it produced and the ones it only exchanges, checks
// that the valid document parses and that for every field name in it, at
// any depth, each of these is refused with its own error: the name with a
// changed letter case, with "s" or "k" replaced by the character that
// Unicode folds to it (U+017F, U+212A), a case variant next to the real
// name, an unknown name, and the name repeated, plainly or escaped. An
// escaped spelling of the exact name is the same name and parses.
func TestInvariantEveryStrictFormatMatchesFieldNamesExactly(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	tpmtest.RequireSwtpm(t)
	dir := filepath.Join(t.TempDir(), "demo")
	mustCLI(t, "demo", "--keep", dir)
	formats := demoFormats(t, dir)
	formats = append(formats, exchangedFormats(t, dir)...)
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			if err := f.parse(t, f.doc); err != nil {
				t.Fatalf("the valid document is refused: %v", err)
			}
			names := fieldNames(f.doc)
			if len(names) == 0 {
				t.Fatal("no field names found")
			}
			t.Logf("%d field names: %v", len(names), names)
			folded := 0
			for _, name := range names {
				for _, m := range mutations(t, f.doc, name) {
					err := f.parse(t, m.doc)
					if m.want == "" {
						if err != nil {
							t.Errorf("%s: refused: %v", m.what, err)
						}
						continue
					}
					if err == nil || !strings.Contains(err.Error(), m.want) {
						t.Errorf("%s: got %v, want an error containing %s", m.what, err, m.want)
					}
					if strings.Contains(m.what, "folded") {
						folded++
					}
				}
			}
			if folded == 0 && slices.ContainsFunc(names, func(n string) bool { return strings.ContainsAny(n, "sk") }) {
				t.Error("no folded name was tried")
			}
		})
	}
}

// demoFormats are the files the demo kept.
func demoFormats(t *testing.T, dir string) []strictFormat {
	read := func(name string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	pubs, _ := filepath.Glob(filepath.Join(dir, "ceremony", "escrow-*.pub.json"))
	if len(pubs) != 1 {
		t.Fatalf("escrow files: %v", pubs)
	}
	pubJSON := read(filepath.Join("ceremony", filepath.Base(pubs[0])))
	p7s := read("warrant.p7s")
	content, err := warrant.Content(p7s)
	if err != nil {
		t.Fatal(err)
	}
	return []strictFormat{
		{"warrant", content, func(t *testing.T, doc []byte) error {
			_, err := warrant.Parse(doc, 0)
			if err != nil && warrant.ReasonOf(err) != warrant.ReasonUnknownField && warrant.ReasonOf(err) != warrant.ReasonDuplicateKey {
				t.Errorf("refused as %q, not as a key", warrant.ReasonOf(err))
			}
			return err
		}},
		{"policy.json", read("policy.json"), func(_ *testing.T, doc []byte) error {
			_, err := bootpolicy.Parse(doc)
			return err
		}},
		{"enrollment", read("court-a.enrollment.json"), func(_ *testing.T, doc []byte) error {
			_, err := enrollment.Parse(doc)
			return err
		}},
		{"escrow file", pubJSON, func(_ *testing.T, doc []byte) error {
			_, err := escrow.ParsePublic(doc)
			return err
		}},
		{"bundle", read(filepath.Join("ceremony", "court-a.bundle.json")), func(_ *testing.T, doc []byte) error {
			_, err := escrow.ParseBundle(doc)
			return err
		}},
		{"release package", read("court-a.release.json"), func(_ *testing.T, doc []byte) error {
			_, err := escrow.ParseRelease(doc)
			return err
		}},
		scopedPartials(t, dir, pubJSON),
	}
}

// scopedPartials is the JSON inside a scoped release package, sealed to
// the agency: the agency reads it when it opens an envelope.
func scopedPartials(t *testing.T, dir string, pubJSON []byte) strictFormat {
	pub, err := escrow.ParsePublic(pubJSON)
	if err != nil {
		t.Fatal(err)
	}
	var rels []*escrow.Release
	for _, c := range []string{"court-a", "court-b"} {
		data, err := os.ReadFile(filepath.Join(dir, c+".release.json"))
		if err != nil {
			t.Fatal(err)
		}
		r, err := escrow.ParseRelease(data)
		if err != nil {
			t.Fatal(err)
		}
		rels = append(rels, r)
	}
	keyLine, err := os.ReadFile(filepath.Join(dir, "agency.key"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := recipient.ParseIdentity(strings.TrimSpace(string(keyLine)))
	if err != nil {
		t.Fatal(err)
	}
	envelope, err := os.ReadFile(filepath.Join(dir, "message.env"))
	if err != nil {
		t.Fatal(err)
	}
	a := rels[0]
	info := escrow.BatchInfo(a.WarrantDigest, a.CustodianID, a.KeyID, a.Index)
	doc, err := id.Open(info, a.SealedPartials)
	if err != nil {
		t.Fatal(err)
	}
	return strictFormat{"scoped partials", doc, func(t *testing.T, doc []byte) error {
		sealed, err := id.Public().Seal(info, doc)
		if err != nil {
			t.Fatal(err)
		}
		edited := *a
		edited.SealedPartials = sealed
		_, _, err = escrow.OpenScoped(id, pub, []*escrow.Release{&edited, rels[1]}, envelope)
		return err
	}}
}

// exchangedFormats are the formats the demo passes around without keeping
// a file, made here by the code that writes them.
func exchangedFormats(t *testing.T, dir string) []strictFormat {
	enrollJSON, err := os.ReadFile(filepath.Join(dir, "court-a.enrollment.json"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := enrollment.Parse(enrollJSON)
	if err != nil {
		t.Fatal(err)
	}
	challenge, _, err := enrollment.NewChallenge(e)
	if err != nil {
		t.Fatal(err)
	}
	policyJSON, err := os.ReadFile(filepath.Join(dir, "policy.json"))
	if err != nil {
		t.Fatal(err)
	}
	checkpoint, err := os.ReadFile(filepath.Join(dir, "court-a.checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	index := int64(3)
	return []strictFormat{
		{"enrollment challenge", marshal(t, challenge), func(_ *testing.T, doc []byte) error {
			_, err := enrollment.ParseChallenge(doc)
			return err
		}},
		{"attestation", marshal(t, &attest.Attestation{Version: attest.Version, CustodianID: "court-a", Time: time.Now().UTC(),
			Nonce: []byte("12345678"), Checkpoint: string(checkpoint), EventLog: []byte{1}}), func(_ *testing.T, doc []byte) error {
			_, err := attest.Parse(doc)
			return err
		}},
		trustPolicy(t),
		updateNote(t, policyJSON),
		{"attest request body", []byte(`{"nonce":"0011223344556677"}`), attestRequest},
		{"status response", marshal(t, &release.Status{ID: "00", State: "failed", KeyIDs: []string{"2026-12"},
			Deadline: time.Now().UTC(), Failed: map[string]release.Code{"2026-12": release.CodeSealFailed},
			LedgerIndices: map[string]int64{"2026-12": 3}, Timings: &release.Timings{TotalMS: 1},
			Salts: []opening.Salt{{Index: 3, Salt: strings.Repeat("ab", 32)}}}), func(_ *testing.T, doc []byte) error {
			return release.DecodeResponse(doc, new(release.Status))
		}},
		{"error response", marshal(t, &release.ErrorBody{Error: struct {
			Code        release.Code `json:"code"`
			Message     string       `json:"message"`
			LedgerIndex *int64       `json:"ledger_index,omitempty"`
			Salt        string       `json:"salt,omitempty"`
		}{Code: release.CodeBusy, Message: "busy", LedgerIndex: &index, Salt: strings.Repeat("ab", 32)}}), func(_ *testing.T, doc []byte) error {
			return release.DecodeResponse(doc, new(release.ErrorBody))
		}},
		{"opening", marshal(t, &opening.Opening{Version: opening.Version, Index: 3, Entry: "e", Checkpoint: string(checkpoint),
			Salt: strings.Repeat("ab", 32), Warrant: []byte{0x30}, EnvelopeList: &warrant.ListDigest{Count: 2, TreeHash: make([]byte, 32)}}),
			func(_ *testing.T, doc []byte) error {
				_, err := opening.Parse(doc)
				return err
			}},
		{"salts file", marshal(t, &opening.SaltsFile{Version: opening.Version, Server: "https://custodian-a.example:8443",
			WarrantDigest: strings.Repeat("cd", 32), Salts: []opening.Salt{{Index: 3, Salt: strings.Repeat("ab", 32)}}}),
			func(_ *testing.T, doc []byte) error {
				_, err := opening.ParseSaltsFile(doc)
				return err
			}},
		{"inclusion response", marshal(t, &ledger.Inclusion{Index: 3, Entry: "e", Checkpoint: string(checkpoint)}), func(_ *testing.T, doc []byte) error {
			return release.DecodeResponse(doc, new(ledger.Inclusion))
		}},
		{"entries range response", marshal(t, &ledger.RangeProof{Checkpoint: string(checkpoint), Entries: []ledger.RangeEntry{{Index: 3, Entry: "e"}}}), func(_ *testing.T, doc []byte) error {
			return release.DecodeResponse(doc, new(ledger.RangeProof))
		}},
	}
}

// trustPolicy is the trust store's policy.json, read when the store opens.
func trustPolicy(t *testing.T) strictFormat {
	dir := t.TempDir()
	s, err := trust.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetPolicy(s.Policy()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "policy.json")
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strictFormat{"trust policy", doc, func(t *testing.T, doc []byte) error {
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := trust.Open(dir)
		return err
	}}
}

// updateNote is an image update: policy.json inside a note signed with the
// escrow authority's update key.
func updateNote(t *testing.T, policyJSON []byte) strictFormat {
	private, public, err := escrow.NewUpdateKey("authority")
	if err != nil {
		t.Fatal(err)
	}
	verifier, _, err := escrow.ParseUpdatePublic(public)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(private)
	if err != nil {
		t.Fatal(err)
	}
	pub := &escrow.Public{KeyID: "2026-12", UpdateKey: verifier}
	return strictFormat{"update note", policyJSON, func(t *testing.T, doc []byte) error {
		signed, err := note.Sign(&note.Note{Text: "custodian update v1\n" + string(doc)}, signer)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = pub.OpenUpdate(signed)
		return err
	}}
}

// attestRequest posts the body to the appliance's API. Without an
// attestation source configured, a body that decodes is answered
// "unavailable"; one that does not, "bad_request" with the reason.
func attestRequest(t *testing.T, doc []byte) error {
	rec := httptest.NewRecorder()
	(&release.API{}).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/attest", bytes.NewReader(doc)))
	var body release.ErrorBody
	if err := release.DecodeResponse(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("the answer does not decode: %v", err)
	}
	if rec.Code == http.StatusNotImplemented && body.Error.Code == release.CodeUnavailable {
		return nil
	}
	return fmt.Errorf("%d %s: %s", rec.Code, body.Error.Code, body.Error.Message)
}

func marshal(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fieldName is how every format spells its field names. Map keys (PCR
// indices, key IDs) do not look like this and are data, not field names.
var fieldName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// fieldNames lists the distinct object keys of doc, at every depth, that
// are field names.
func fieldNames(doc []byte) []string {
	dec := jsontext.NewDecoder(bytes.NewReader(doc))
	var names []string
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			break
		}
		if tok.Kind() == '"' && isName(dec) {
			if s := tok.String(); fieldName.MatchString(s) && !slices.Contains(names, s) {
				names = append(names, s)
			}
		}
	}
	return names
}

// isName says whether the token just read was an object member's name:
// names are the odd-numbered tokens of an object.
func isName(dec *jsontext.Decoder) bool {
	kind, n := dec.StackIndex(dec.StackDepth())
	return kind == '{' && n%2 == 1
}

type mutation struct {
	what string
	doc  []byte
	want string // "" when the document must parse
}

// mutations edits the first occurrence of the field name in doc.
func mutations(t *testing.T, doc []byte, name string) []mutation {
	t.Helper()
	re := regexp.MustCompile(`"` + name + `"\s*:\s*`)
	loc := re.FindIndex(doc)
	if loc == nil {
		t.Fatalf("%q not found", name)
	}
	value, err := jsontext.NewDecoder(bytes.NewReader(doc[loc[1]:])).ReadValue()
	if err != nil {
		t.Fatal(err)
	}
	rename := func(to string) []byte {
		return slices.Concat(doc[:loc[0]], []byte(`"`+to+`":`), doc[loc[1]:])
	}
	insert := func(key string) []byte {
		return slices.Concat(doc[:loc[0]], []byte(`"`+key+`":`), value, []byte(","), doc[loc[0]:])
	}
	unknown := func(key string) string { return fmt.Sprintf("unknown field %q", key) }
	upper := strings.ToUpper(name[:1]) + name[1:]
	escaped := fmt.Sprintf(`\u%04x`, name[0]) + name[1:]
	ms := []mutation{
		{"case changed " + upper, rename(upper), unknown(upper)},
		{"case variant beside " + name, insert(upper), unknown(upper)},
		{"unknown beside " + name, insert("zz_" + name), unknown("zz_" + name)},
		{"duplicate " + name, insert(name), fmt.Sprintf("duplicate key %q", name)},
		{"escaped duplicate " + name, insert(escaped), fmt.Sprintf("duplicate key %q", name)},
		{"escaped " + name, rename(escaped), ""},
	}
	if i := strings.IndexAny(name, "sk"); i >= 0 {
		fold := map[byte]string{'s': "\u017f", 'k': "\u212a"}[name[i]]
		to := name[:i] + fold + name[i+1:]
		ms = append(ms, mutation{"folded " + to, rename(to), unknown(to)})
	}
	return ms
}
