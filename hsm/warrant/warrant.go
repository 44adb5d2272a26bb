package warrant

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/recipient"
)

const (
	// MaxSize caps a warrant document.
	MaxSize = 64 << 10
	// DefaultMaxValidity caps not_after - not_before unless configured.
	DefaultMaxValidity = 30 * 24 * time.Hour
	// maxText caps each free-text field: the summary must fit a display.
	maxText = 4096
	// maxList caps each list.
	maxList = 256
	// maxEnvelopes caps the envelopes: each with its digest and seal proof
	// takes some 310 bytes, so that this many fit MaxSize with short
	// targets.
	maxEnvelopes = 192
)

// MaxInlineEnvelopes is the most envelopes a warrant names inline; more
// are named by a list ([ListDigest]).
const MaxInlineEnvelopes = maxEnvelopes

// Warrant is the signed document. Field order is the canonical JSON order.
type Warrant struct {
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
	// Envelopes, when present, are the escrow envelopes a scoped release
	// covers. A warrant without them encodes as it did before the field.
	Envelopes []EnvelopeRef `json:"envelopes,omitempty"`
	// EnvelopeList, when present, names the envelopes by the count and
	// tree hash of a list that travels beside the warrant (list.go); a
	// warrant names its envelopes inline or by a list, not both.
	EnvelopeList *ListDigest `json:"envelope_list,omitempty"`

	notBefore, notAfter time.Time
	recipient           *recipient.PublicKey
}

// EnvelopeRef names one escrow envelope: its key ID and target, which must
// be among the warrant's, and its HPKE encapsulated key, an uncompressed
// P-256 point that identifies the envelope; then the SHA-256 of its
// ciphertext and its sealer's proof (package escrow), which the appliance
// checks before it works on the envelope. This package does not check
// the proof: an envelope named without one parses, and the appliance
// refuses it with its own code.
type EnvelopeRef struct {
	KeyID            string `json:"key_id"`
	Target           string `json:"target"`
	Enc              []byte `json:"enc"`
	CiphertextSHA256 []byte `json:"ciphertext_sha256,omitempty"`
	Proof            []byte `json:"proof,omitempty"`
}

// Parse reads a warrant document strictly and checks every field. A
// maxValidity of 0 means DefaultMaxValidity. It does not check signatures
// or whether the warrant is in force now.
func Parse(data []byte, maxValidity time.Duration) (*Warrant, error) {
	var w Warrant
	if err := strictjson.Decode(data, &w, MaxSize); err != nil {
		return nil, jsonRefusal(err)
	}
	if err := w.check(maxValidity); err != nil {
		return nil, err
	}
	return &w, nil
}

// jsonRefusal gives each strict-decoding failure its own reason.
func jsonRefusal(err error) error {
	var fieldErr *strictjson.FieldError
	var b64Err base64.CorruptInputError
	switch {
	case errors.Is(err, strictjson.ErrTooLarge):
		return refuseErr(ReasonTooLarge, err, "warrant too large")
	case errors.Is(err, strictjson.ErrUnknownField):
		return refuseErr(ReasonUnknownField, err, "warrant has a field this version does not know")
	case errors.Is(err, strictjson.ErrDuplicateKey):
		return refuseErr(ReasonDuplicateKey, err, "warrant repeats a key")
	case errors.Is(err, strictjson.ErrTrailingData):
		return refuseErr(ReasonTrailingData, err, "warrant has data after the JSON object")
	case errors.As(err, &b64Err):
		// An envelope's enc, digest and proof are a warrant's only byte strings.
		return refuseErr(ReasonBadEnvelope, err, "warrant envelope enc, ciphertext_sha256 or proof is not base64")
	case errors.As(err, &fieldErr) && fieldErr.Field != "":
		return refuseErr(ReasonBadField, err, "warrant field %q has the wrong type", fieldErr.Field)
	}
	return refuseErr(ReasonMalformedJSON, err, "warrant is not a JSON object")
}

func (w *Warrant) check(maxValidity time.Duration) error {
	if w.Version == 0 {
		return refuse(ReasonMissingField, "warrant lacks \"version\"")
	}
	if w.Version != 1 {
		return refuse(ReasonBadVersion, "warrant version %d is not supported; this software reads version 1", w.Version)
	}
	texts := []struct{ name, v string }{
		{"serial", w.Serial}, {"docket", w.Docket}, {"court", w.Court}, {"agency", w.Agency},
		{"official", w.Official}, {"offence", w.Offence}, {"not_before", w.NotBefore},
		{"not_after", w.NotAfter},
	}
	for _, f := range texts {
		if err := checkText(f.name, f.v); err != nil {
			return err
		}
	}
	if err := checkList("targets", w.Targets, nil); err != nil {
		return err
	}
	for _, t := range w.Targets {
		if err := checkTargetASCII(t); err != nil {
			return err
		}
	}
	if err := checkList("key_ids", w.KeyIDs, ids.CheckKeyID); err != nil {
		return err
	}
	if err := checkList("custodians", w.Custodians, ids.CheckCustodian); err != nil {
		return err
	}
	if err := w.checkWindow(maxValidity); err != nil {
		return err
	}
	// The recipient has its own strict syntax (a prefix and base64url), so
	// it skips the free-text checks; it must be exactly the key's one-line
	// form, so nothing (such as the line break a .pub file ends in) rides
	// along to the display.
	if w.Recipient == "" {
		return refuse(ReasonMissingField, "warrant lacks \"recipient\" or it is empty")
	}
	pk, err := recipient.ParsePublicKey(w.Recipient)
	if err != nil {
		return refuseErr(ReasonBadRecipient, err, "warrant recipient is not an agency public key")
	}
	if pk.String() != w.Recipient {
		return refuse(ReasonBadRecipient, "warrant recipient is not exactly the key's one-line form %s:…; remove anything around it (a line break, spaces)", strings.SplitN(pk.String(), ":", 2)[0])
	}
	w.recipient = pk
	return w.checkEnvelopes()
}

// checkEnvelopes checks that the envelopes are coherent with the rest of
// the warrant. Whether a key ID is scoped is the appliance's to check.
func (w *Warrant) checkEnvelopes() error {
	if w.EnvelopeList != nil {
		return w.checkListDigest()
	}
	if w.Envelopes == nil {
		return nil
	}
	if len(w.Envelopes) == 0 {
		return refuse(ReasonMissingField, "warrant \"envelopes\" is present but empty; leave it out instead")
	}
	if len(w.Envelopes) > maxEnvelopes {
		return refuse(ReasonBadField, "warrant lists more than %d envelopes", maxEnvelopes)
	}
	seen := make(map[string]bool, len(w.Envelopes))
	for i, e := range w.Envelopes {
		if err := w.checkEnvelope(i, e); err != nil {
			return err
		}
		k := e.KeyID + "\x00" + string(e.Enc)
		if seen[k] {
			return refuse(ReasonDuplicateEntry, "warrant envelope %d repeats an earlier envelope of key ID %q", i+1, e.KeyID)
		}
		seen[k] = true
	}
	return nil
}

func (w *Warrant) checkEnvelope(i int, e EnvelopeRef) error {
	if !slices.Contains(w.KeyIDs, e.KeyID) {
		return refuse(ReasonBadEnvelope, "warrant envelope %d is for key ID %q, which is not in \"key_ids\"", i+1, e.KeyID)
	}
	if !slices.Contains(w.Targets, e.Target) {
		return refuse(ReasonBadEnvelope, "warrant envelope %d is for target %q, which is not in \"targets\"", i+1, e.Target)
	}
	if len(e.Enc) != 65 {
		return refuse(ReasonBadEnvelope, "warrant envelope %d enc is %d bytes, want 65 (an uncompressed P-256 point)", i+1, len(e.Enc))
	}
	if _, err := ecdh.P256().NewPublicKey(e.Enc); err != nil {
		return refuseErr(ReasonBadEnvelope, err, "warrant envelope %d enc is not a P-256 point", i+1)
	}
	return nil
}

func (w *Warrant) checkListDigest() error {
	d := w.EnvelopeList
	switch {
	case w.Envelopes != nil:
		return refuse(ReasonBadEnvelope, "warrant names envelopes both inline and by a list; use one")
	case d.Count < 1 || d.Count > MaxListEntries:
		return refuse(ReasonBadEnvelope, "warrant envelope_list count must be 1 to %d", MaxListEntries)
	case len(d.TreeHash) != tlog.HashSize:
		return refuse(ReasonBadEnvelope, "warrant envelope_list tree_hash is %d bytes, want %d", len(d.TreeHash), tlog.HashSize)
	}
	return nil
}

// NamesEnvelopes reports whether the warrant names envelopes, inline or
// by a list.
func (w *Warrant) NamesEnvelopes() bool { return w.Envelopes != nil || w.EnvelopeList != nil }

// List returns the warrant's envelopes as one list: its inline envelopes,
// or, for a warrant that names a list, detached after checking that it is
// that list (count and tree hash) and that each entry's key ID and target
// are the warrant's. A warrant that names none has none (nil), and must
// come without a list.
func (w *Warrant) List(detached *EnvelopeList) (*EnvelopeList, error) {
	switch {
	case w.EnvelopeList == nil && detached != nil:
		return nil, refuse(ReasonListUnexpected, "an envelope list came with a warrant that names no list; send the warrant alone")
	case w.EnvelopeList == nil && w.Envelopes == nil:
		return nil, nil
	case w.EnvelopeList == nil:
		return ListOf(w.Envelopes)
	case detached == nil:
		return nil, refuse(ReasonListMissing, "the warrant names an envelope list of %d entries and none came with it; send the list file beside the warrant", w.EnvelopeList.Count)
	}
	if detached.Count() != w.EnvelopeList.Count || !bytes.Equal(detached.TreeHash[:], w.EnvelopeList.TreeHash) {
		return nil, refuse(ReasonListMismatch, "the envelope list (%d entries, tree hash %x…) is not the one the warrant signs (%d entries, tree hash %x…); send the list file written with this warrant",
			detached.Count(), detached.TreeHash[:6], w.EnvelopeList.Count, w.EnvelopeList.TreeHash[:6])
	}
	for i, e := range detached.Entries {
		if !slices.Contains(w.KeyIDs, e.KeyID) {
			return nil, refuse(ReasonListKeyID, "envelope list entry %d is for key ID %q, which the warrant does not name", i+1, e.KeyID)
		}
		if !slices.Contains(w.Targets, e.Target) {
			return nil, refuse(ReasonListTarget, "envelope list entry %d is for target %q, which the warrant does not name", i+1, e.Target)
		}
	}
	return detached, nil
}

// span writes a validity span as a person counts it: in whole days, whole
// hours, or hours to a tenth, never in Go's "720h0m0s".
func span(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%d hours", d/time.Hour)
	}
	return fmt.Sprintf("%.1f hours", d.Hours())
}

func (w *Warrant) checkWindow(maxValidity time.Duration) error {
	if maxValidity == 0 {
		maxValidity = DefaultMaxValidity
	}
	var err error
	if w.notBefore, err = time.Parse(time.RFC3339, w.NotBefore); err != nil {
		return refuse(ReasonBadTime, "warrant not_before %q is not an RFC 3339 time, such as 2026-11-20T09:00:00Z", w.NotBefore)
	}
	if w.notAfter, err = time.Parse(time.RFC3339, w.NotAfter); err != nil {
		return refuse(ReasonBadTime, "warrant not_after %q is not an RFC 3339 time, such as 2026-11-20T09:00:00Z", w.NotAfter)
	}
	if !w.notAfter.After(w.notBefore) {
		return refuse(ReasonBadWindow, "warrant not_after must be later than not_before")
	}
	if w.notAfter.Sub(w.notBefore) > maxValidity {
		return refuse(ReasonWindowTooLong, "warrant is valid for %s, at most %s allowed", span(w.notAfter.Sub(w.notBefore)), span(maxValidity))
	}
	return nil
}

// checkText refuses empty and oversized fields and any field the display
// could show as something other than what was signed (text.go).
func checkText(name, v string) error {
	if v == "" {
		return refuse(ReasonMissingField, "warrant lacks %q or it is empty", name)
	}
	if len(v) > maxText {
		return refuse(ReasonBadField, "warrant field %q is longer than %d bytes", name, maxText)
	}
	if err := checkDisplayText(name, v); err != nil {
		return refuseErr(ReasonBadText, err, "the display would not show the warrant as signed")
	}
	return nil
}

func checkList(name string, vs []string, checkID func(string) error) error {
	if len(vs) == 0 {
		return refuse(ReasonMissingField, "warrant needs at least one entry in %q", name)
	}
	if len(vs) > maxList {
		return refuse(ReasonBadField, "warrant lists more than %d %s", maxList, name)
	}
	seen := make(map[string]bool, len(vs))
	for _, v := range vs {
		if err := checkText(name, v); err != nil {
			return err
		}
		if checkID != nil {
			if err := checkID(v); err != nil {
				return refuse(ReasonBadField, "warrant %s: %v", name, err)
			}
		}
		if seen[v] {
			return refuse(ReasonDuplicateEntry, "warrant lists %q twice in %q", v, name)
		}
		seen[v] = true
	}
	return nil
}

// Marshal returns the canonical encoding, after the same checks as Parse:
// one member of the warrant per line, two spaces in, in field order; each
// member's value compact on its line, except that each envelope gets a
// line of its own; one final newline. A person reads it with cat or an
// editor, and it stays within MaxSize wherever the compact form does but
// for a few bytes per envelope. Verification accepts any encoding that
// Parse accepts, because the signature covers the bytes.
func (w *Warrant) Marshal(maxValidity time.Duration) ([]byte, error) {
	if err := w.check(maxValidity); err != nil {
		return nil, err
	}
	b, err := canonicalJSON(w)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, refuse(ReasonTooLarge, "the warrant would be %d bytes, at most %d allowed; name its envelopes by a list instead of inline", len(b), MaxSize)
	}
	return b, nil
}

// Encodes reports whether data is exactly the encoding Marshal writes of
// w, or the compact one-line encoding that earlier versions wrote. Either
// shows a reader what it holds: no carriage return or other white space
// hides part of it.
func (w *Warrant) Encodes(data []byte) bool {
	canonical, err := canonicalJSON(w)
	if err == nil && bytes.Equal(data, canonical) {
		return true
	}
	compact, err := jsonMarshal(w)
	return err == nil && bytes.Equal(data, compact)
}

// Window returns not_before and not_after.
func (w *Warrant) Window() (notBefore, notAfter time.Time) { return w.notBefore, w.notAfter }

// RecipientKey returns the parsed recipient public key.
func (w *Warrant) RecipientKey() *recipient.PublicKey { return w.recipient }

// Digest is the SHA-256 of the signed content bytes: what HPKE info strings
// and ledger entries bind to.
func Digest(content []byte) [32]byte { return sha256.Sum256(content) }

func (w *Warrant) String() string {
	return fmt.Sprintf("warrant %s of %s", w.Serial, w.Court)
}

// canonicalJSON lays out w's compact encoding one member per line and one
// envelope per line. It only adds white space between tokens, so the
// document means what the compact one means. <, > and & are written as
// they are, not as \u003c and the like: what a judge reads with cat is
// what the display shows.
func canonicalJSON(w *Warrant) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, err
	}
	compact := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	dec := jsontext.NewDecoder(bytes.NewReader(compact))
	if _, err := dec.ReadToken(); err != nil { // {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("{")
	for i := 0; dec.PeekKind() != '}'; i++ {
		// ReadValue's result is valid only until the next read.
		name, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		name = bytes.Clone(name)
		value, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "\n  %s: ", name)
		if string(name) == `"envelopes"` {
			if err := writeLines(&b, value); err != nil {
				return nil, err
			}
			continue
		}
		b.Write(value)
	}
	b.WriteString("\n}\n")
	return b.Bytes(), nil
}

// writeLines writes a JSON array with each element on a line of its own.
func writeLines(b *bytes.Buffer, array jsontext.Value) error {
	dec := jsontext.NewDecoder(bytes.NewReader(array))
	if _, err := dec.ReadToken(); err != nil { // [
		return err
	}
	b.WriteString("[")
	for i := 0; dec.PeekKind() != ']'; i++ {
		v, err := dec.ReadValue()
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n    ")
		b.Write(v)
	}
	b.WriteString("\n  ]")
	return nil
}

// jsonMarshal encodes w compactly without checking it.
func jsonMarshal(w *Warrant) ([]byte, error) {
	b, err := json.Marshal(w)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
