package warrant

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// testEnc is a valid encapsulated key: the P-256 point (i+1)·G.
func testEnc(i int) []byte {
	scalar := make([]byte, 32)
	scalar[29], scalar[30], scalar[31] = byte((i+1)>>16), byte((i+1)>>8), byte(i+1)
	k, err := ecdh.P256().NewPrivateKey(scalar)
	if err != nil {
		panic(err)
	}
	return k.PublicKey().Bytes()
}

// testEnvelopes are n distinct envelopes of key ID "2026-11" for the
// fixture's first target, with a digest and a proof of their real sizes
// (this package does not check them).
func testEnvelopes(n int) []EnvelopeRef {
	out := make([]EnvelopeRef, n)
	for i := range out {
		out[i] = EnvelopeRef{KeyID: "2026-11", Target: "alice@example.org", Enc: testEnc(i),
			CiphertextSHA256: bytes.Repeat([]byte{byte(i)}, 32), Proof: bytes.Repeat([]byte{byte(i)}, 64)}
	}
	return out
}

// scopedWarrant names two key IDs and three envelopes, listed in another
// order than the targets.
func scopedWarrant(f *fixture) *Warrant {
	w := f.warrant()
	w.KeyIDs = []string{"2026-11", "2026-12"}
	w.Envelopes = []EnvelopeRef{
		{KeyID: "2026-11", Target: "+15550100", Enc: testEnc(1)},
		{KeyID: "2026-12", Target: "alice@example.org", Enc: testEnc(2)},
		{KeyID: "2026-11", Target: "alice@example.org", Enc: testEnc(3)},
	}
	return w
}

func TestEnvelopesRoundTrip(t *testing.T) {
	f := newFixture(t)
	w := scopedWarrant(f)
	content := f.content(t, w)
	wantTail := `"recipient": "` + f.recipient + `",` + "\n" + `  "envelopes": [` + "\n" + `    {"key_id":"2026-11","target":"+15550100","enc":"` +
		base64.StdEncoding.EncodeToString(testEnc(1)) + `"},`
	if !strings.Contains(string(content), wantTail) {
		t.Fatalf("envelopes not encoded after the recipient as key_id, target, base64 enc:\n%s", content)
	}
	got, err := Parse(content, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Envelopes, w.Envelopes) {
		t.Fatalf("envelopes after the round trip: %+v", got.Envelopes)
	}
	again, err := got.Marshal(0)
	if err != nil || !bytes.Equal(again, content) {
		t.Fatalf("second encoding differs (%v):\n%s\n%s", err, content, again)
	}
	if e := inlineFor(got, "2026-11"); len(e) != 2 || !bytes.Equal(e[0].Enc, testEnc(1)) || !bytes.Equal(e[1].Enc, testEnc(3)) {
		t.Errorf("envelopes of 2026-11 = %+v", e)
	}
	if e := inlineFor(got, "2026-12"); len(e) != 1 || e[0].Target != "alice@example.org" {
		t.Errorf("envelopes of 2026-12 = %+v", e)
	}
	if e := inlineFor(got, "2027-01"); e != nil {
		t.Errorf("envelopes of a key ID without envelopes = %+v", e)
	}
}

// TestEnvelopeProofFieldsRoundTrip: an envelope's digest and seal proof
// encode after its enc as ciphertext_sha256 and proof, and parse back; a
// reference without them still parses (the appliance refuses it).
func TestEnvelopeProofFieldsRoundTrip(t *testing.T) {
	f := newFixture(t)
	w := f.warrant()
	w.Envelopes = testEnvelopes(2)
	w.Envelopes[1].CiphertextSHA256, w.Envelopes[1].Proof = nil, nil
	content := f.content(t, w)
	want := `"enc":"` + base64.StdEncoding.EncodeToString(testEnc(0)) + `","ciphertext_sha256":"` +
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0}, 32)) + `","proof":"` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0}, 64)) + `"}`
	if !strings.Contains(string(content), want) || !strings.Contains(string(content), base64.StdEncoding.EncodeToString(testEnc(1))+"\"}\n  ]") {
		t.Fatalf("envelope fields not encoded as documented:\n%s", content)
	}
	got, err := Parse(content, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Envelopes, w.Envelopes) {
		t.Fatalf("after the round trip: %+v", got.Envelopes)
	}
}

// warrantBeforeEnvelopes is the warrant type as it was before envelopes.
type warrantBeforeEnvelopes struct {
	Version    int      `json:"version"`
	Serial     string   `json:"serial"`
	Docket     string   `json:"docket"`
	Court      string   `json:"court"`
	Agency     string   `json:"agency"`
	Official   string   `json:"official"`
	Offence    string   `json:"offence"`
	Targets    []string `json:"targets"`
	NotBefore  string   `json:"not_before"`
	NotAfter   string   `json:"not_after"`
	KeyIDs     []string `json:"key_ids"`
	Custodians []string `json:"custodians"`
	Recipient  string   `json:"recipient"`
}

// TestNoEnvelopesEncodesAsBefore: warrants signed before envelopes existed
// keep their bytes, so their signatures keep verifying: the compact form
// earlier versions wrote still parses and is still one warrant sign signs
// (Encodes), and the readable form Marshal writes now is the same
// document with white space added between tokens.
func TestNoEnvelopesEncodesAsBefore(t *testing.T) {
	f := newFixture(t)
	w := f.warrant()
	old := warrantBeforeEnvelopes{w.Version, w.Serial, w.Docket, w.Court, w.Agency, w.Official, w.Offence,
		w.Targets, w.NotBefore, w.NotAfter, w.KeyIDs, w.Custodians, w.Recipient}
	want, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, '\n')
	got := f.content(t, w)
	var compacted bytes.Buffer
	if err := json.Compact(&compacted, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(compacted.Bytes(), '\n'), want) {
		t.Fatalf("a warrant without envelopes encodes differently:\n got %s\nwant %s", got, want)
	}
	if !w.Encodes(want) || !w.Encodes(got) {
		t.Fatal("the compact and the readable form are not both taken as written by warrant new")
	}
	parsed, err := Parse(want, 0)
	if err != nil {
		t.Fatal(err)
	}
	if parsed.Envelopes != nil || inlineFor(parsed, "2026-11") != nil {
		t.Fatalf("envelopes from nowhere: %+v", parsed.Envelopes)
	}
	if again, err := parsed.Marshal(0); err != nil || !bytes.Equal(again, got) {
		t.Fatalf("re-encoding changed the bytes (%v): %s", err, again)
	}
}

func TestEnvelopeLimits(t *testing.T) {
	f := newFixture(t)
	w := f.warrant()
	w.Envelopes = testEnvelopes(maxEnvelopes)
	content := f.content(t, w)
	if len(content) > MaxSize {
		t.Fatalf("%d envelopes make a %d-byte warrant, over MaxSize", maxEnvelopes, len(content))
	}
	if _, err := Parse(content, 0); err != nil {
		t.Fatalf("%d envelopes: %v", maxEnvelopes, err)
	}
	w.Envelopes = testEnvelopes(maxEnvelopes + 1)
	if _, err := w.Marshal(0); ReasonOf(err) != ReasonBadField {
		t.Fatalf("%d envelopes: got %v, want %s", maxEnvelopes+1, err, ReasonBadField)
	}
}

// TestEnvelopeDuplicateIsPerKeyID: a duplicate is the same encapsulated key
// twice under one key ID, whatever the targets say; under two key IDs the
// same point names two different envelopes.
func TestEnvelopeDuplicateIsPerKeyID(t *testing.T) {
	f := newFixture(t)
	w := f.warrant()
	w.KeyIDs = []string{"2026-11", "2026-12"}
	w.Envelopes = []EnvelopeRef{
		{KeyID: "2026-11", Target: "alice@example.org", Enc: testEnc(1)},
		{KeyID: "2026-12", Target: "alice@example.org", Enc: testEnc(1)},
	}
	if _, err := w.Marshal(0); err != nil {
		t.Fatalf("same point under two key IDs: %v", err)
	}
	w.Envelopes[1] = EnvelopeRef{KeyID: "2026-11", Target: "+15550100", Enc: testEnc(1)}
	if _, err := w.Marshal(0); ReasonOf(err) != ReasonDuplicateEntry {
		t.Fatalf("same point under one key ID for two targets: got %v, want %s", err, ReasonDuplicateEntry)
	}
}

func TestSummaryEnvelopes(t *testing.T) {
	f := newFixture(t)
	w, err := Parse(f.content(t, scopedWarrant(f)), 0)
	if err != nil {
		t.Fatal(err)
	}
	s := Summary(w, nil)
	want := "Key IDs:    2026-11, 2026-12\nEnvelopes:  3 (\"alice@example.org\": 2, \"+15550100\": 1)\nCustodians: "
	if !strings.Contains(s, want) || strings.Contains(s, "WHOLE SHARE") {
		t.Fatalf("summary lacks\n%s\n (or calls a key ID with envelopes a whole share) in\n%s", want, s)
	}

	plain, err := Parse(f.content(t, f.warrant()), 0)
	if err != nil {
		t.Fatal(err)
	}
	s = Summary(plain, nil)
	if strings.Contains(s, "Envelopes") || !strings.Contains(s, "Key IDs:    2026-11\nKey ID 2026-11: WHOLE SHARE — opens every message of that key ID\nCustodians: ") {
		t.Fatalf("summary of a warrant without envelopes changed:\n%s", s)
	}
}

// inlineFor is what the release path takes of an inline warrant: its
// envelopes as a list, those of keyID.
func inlineFor(w *Warrant, keyID string) []EnvelopeRef {
	if len(w.Envelopes) == 0 {
		return nil
	}
	l, err := ListOf(w.Envelopes)
	if err != nil {
		return nil
	}
	return l.For(keyID)
}

// TestReadableWarrantFitsTheInlineCap: the readable encoding adds a few
// bytes per envelope to the compact one, so the most envelopes a warrant
// names inline still fit MaxSize with short targets; a warrant that would
// not fit is refused by Marshal (too_large), not written for Parse to
// refuse later.
func TestReadableWarrantFitsTheInlineCap(t *testing.T) {
	f := newFixture(t)
	w := f.warrant()
	w.Targets = []string{"alice@example.org"}
	w.Envelopes = testEnvelopes(MaxInlineEnvelopes)
	readable, err := w.Marshal(0)
	if err != nil {
		t.Fatalf("%d envelopes: %v", MaxInlineEnvelopes, err)
	}
	compact, err := jsonMarshal(w)
	if err != nil {
		t.Fatal(err)
	}
	if extra := len(readable) - len(compact); extra > 6*MaxInlineEnvelopes+4*16 {
		t.Errorf("the readable form adds %d bytes to %d", extra, len(compact))
	}
	if _, err := Parse(readable, 0); err != nil {
		t.Fatalf("Parse refuses what Marshal wrote: %v", err)
	}
	long := strings.Repeat("x", 400)
	w.Targets = []string{long}
	for i := range w.Envelopes {
		w.Envelopes[i].Target = long
	}
	if _, err := w.Marshal(0); ReasonOf(err) != ReasonTooLarge {
		t.Fatalf("a warrant over MaxSize: %v", err)
	}
}
