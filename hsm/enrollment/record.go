package enrollment

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/tpm"
)

// A Record is the escrow authority's public statement about one
// enrollment it checked: which custodian, which TPM (EK Name), which
// attestation key (AK Name) and import key, and its verdict. It stands in
// for the challenge secret, which never leaves the authority, so that
// anyone holding the authority's verifier key can trust the enrollment's
// AK as the authority did ([VerifyOptions.Records]).
//
// A record is a C2SP signed note (golang.org/x/mod/sumdb/note, Ed25519)
// signed with the authority's record key ([NewRecordKey]), whose text is a
// fixed sequence of lines with one canonical form:
//
//	custodian enrollment record v2
//	custodian court-a
//	serial 3
//	ek 000b…(68 hex)
//	ak 000b…(68 hex)
//	import-key 000b…(68 hex)
//	ek-certified yes | no
//	verdict verified | refused
//	reason - | ak-unbound | ek-uncertified | does-not-verify | withdrawn
//	time 2026-11-25T12:00:00Z
//	not-after 2027-02-23T12:00:00Z
//
// A verified record is written only for an enrollment whose AK answered
// the authority's challenge; a refused one says the authority does not
// trust the device, and verifies nothing. A signature cannot be taken
// back, so records are ordered instead: the serial counts the authority's
// records of one custodian, and a verifier holding several trusts only
// the newest of that custodian's TPM ([Standing]); a refusal with the
// same or a higher serial withdraws a verified record. A verified record
// also stops vouching after not-after, so one the verifier never saw
// withdrawn still runs out.
type Record struct {
	CustodianID   string
	Serial        uint64 // the authority's count of records for this custodian, from 1
	EKName        []byte
	AKName        []byte
	ImportKeyName []byte
	EKCertified   bool // informational (verifiers check the EK certificate themselves); false in a refusal
	Verdict       string
	Reason        string // "" for a verified record
	Time          time.Time
	NotAfter      time.Time // a verified record vouches only until then
}

// Verdicts and the reasons of a refused record.
const (
	VerdictVerified = "verified"
	VerdictRefused  = "refused"

	ReasonAKUnbound     = "ak-unbound"
	ReasonEKUncertified = "ek-uncertified"
	ReasonDoesNotVerify = "does-not-verify"
	ReasonWithdrawn     = "withdrawn"
)

// Reasons lists the reasons a refused record may give.
var Reasons = []string{ReasonAKUnbound, ReasonEKUncertified, ReasonDoesNotVerify, ReasonWithdrawn}

const (
	recordHeader         = "custodian enrollment record v2"
	maxRecordSize        = 4096
	defaultRecordKeyName = "custodian-escrow-authority"
)

// reasons say in words what each refusal code means.
var reasons = map[string]string{
	ReasonAKUnbound:     "its attestation key did not answer the authority's challenge",
	ReasonEKUncertified: "its endorsement key has no manufacturer certificate",
	ReasonDoesNotVerify: "its enrollment does not verify",
	ReasonWithdrawn:     "the authority withdrew its trust in the device",
}

// Errors a holder of a record acts on: each says why the record cannot
// stand in for the challenge secret.
var (
	// ErrRecordWrongKey: the record is not signed by the pinned key.
	ErrRecordWrongKey = errors.New("the enrollment record is not signed by the escrow authority's key you pinned")
	// ErrRecordTampered: the record names the pinned key, but its text or
	// signature was changed after signing.
	ErrRecordTampered = errors.New("the enrollment record does not verify with the pinned key: it was altered after signing, or signed by another key named like the pinned one")
	// ErrRecordMalformed: not a record at all.
	ErrRecordMalformed = errors.New("not an enrollment record")
	// ErrRecordMismatch: a genuine record, but of another custodian, TPM,
	// attestation key or import key than the enrollment shows.
	ErrRecordMismatch = errors.New("the enrollment record is for another device")
	// ErrRecordRefused: the authority's verdict on the enrollment was
	// that it does not verify.
	ErrRecordRefused = errors.New("the escrow authority refused this enrollment")
	// ErrRecordExpired: a verified record past its not-after.
	ErrRecordExpired = errors.New("the enrollment record has expired")
)

// Terms are what the authority decides about each record it signs: its
// place among the custodian's records, and until when it vouches.
type Terms struct {
	Serial   uint64
	NotAfter time.Time
}

// NewRecordKey makes the authority's record key named name ("" for the
// default): the private key in signed-note form (it stays with the
// authority) and its verifier key (published).
func NewRecordKey(name string) (private, verifier string, err error) {
	if name == "" {
		name = defaultRecordKeyName
	}
	return note.GenerateKey(rand.Reader, name)
}

// VerifiedRecord states that e verified as v says, at now, on terms. It
// refuses an enrollment whose AK is not proven by the challenge: a record
// of one would vouch for what the authority never checked.
func VerifiedRecord(e *Enrollment, v *Verified, now time.Time, terms Terms) (*Record, error) {
	if !v.AKChallenged {
		return nil, fmt.Errorf("%w: a record is written only for an enrollment verified with its challenge secret, never on another record", ErrAKUnbound)
	}
	r := &Record{
		CustodianID: e.CustodianID, Serial: terms.Serial, EKName: v.EK.Name(), AKName: v.AK.Name(), ImportKeyName: v.ImportKey.Name(),
		EKCertified: v.EKCertified, Verdict: VerdictVerified, Time: now.UTC().Truncate(time.Second), NotAfter: terms.NotAfter.UTC().Truncate(time.Second),
	}
	return r, r.checkTerms()
}

// RefusedRecord states the authority's deliberate refusal of e's device
// for reason (one of [Reasons]). It is never written as a side effect of
// a failed check: the authority's own mistake (a missing root, the wrong
// secret) would otherwise become a signed statement about the device. It
// needs e's EK, AK and import key to name the device.
func RefusedRecord(e *Enrollment, reason string, now time.Time, terms Terms) (*Record, error) {
	if reasons[reason] == "" {
		return nil, fmt.Errorf("a refusal's reason is one of %s, not %q", strings.Join(Reasons, ", "), reason)
	}
	names, err := e.keyNames()
	if err != nil {
		return nil, err
	}
	r := &Record{
		CustodianID: e.CustodianID, Serial: terms.Serial, EKName: names[0], AKName: names[1], ImportKeyName: names[2],
		EKCertified: false, Verdict: VerdictRefused, Reason: reason, Time: now.UTC().Truncate(time.Second), NotAfter: terms.NotAfter.UTC().Truncate(time.Second),
	}
	return r, r.checkTerms()
}

// checkTerms refuses terms under which a new record would not order or
// would never vouch.
func (r *Record) checkTerms() error {
	switch {
	case r.Serial == 0:
		return errors.New("a record's serial starts at 1: one more than the authority's last record of this custodian")
	case !r.NotAfter.After(r.Time):
		return errors.New("a record's not-after must be later than its time")
	}
	return nil
}

// Marshal encodes r's text in its canonical form.
func (r *Record) Marshal() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecordMalformed, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\ncustodian %s\nserial %d\nek %x\nak %x\nimport-key %x\nek-certified %s\nverdict %s\nreason %s\ntime %s\nnot-after %s\n",
		recordHeader, r.CustodianID, r.Serial, r.EKName, r.AKName, r.ImportKeyName, yesNo(r.EKCertified),
		r.Verdict, dashed(r.Reason), r.Time.Format(time.RFC3339), r.NotAfter.Format(time.RFC3339))
	return b.Bytes(), nil
}

// Sign signs r with the authority's private record key.
func (r *Record) Sign(privateKey string) ([]byte, error) {
	signer, err := note.NewSigner(strings.TrimSpace(privateKey))
	if err != nil {
		return nil, errors.New("the record signing key is not a signed-note private key (custodian enroll keygen writes one)")
	}
	text, err := r.Marshal()
	if err != nil {
		return nil, err
	}
	return note.Sign(&note.Note{Text: string(text)}, signer)
}

// OpenRecord checks signed against the authority's verifier key and
// returns the record. It does not judge the verdict: [Standing]
// does.
func OpenRecord(signed []byte, verifierKey string) (*Record, error) {
	v, err := note.NewVerifier(strings.TrimSpace(verifierKey))
	if err != nil {
		return nil, errors.New("the escrow authority's key is not a signed-note verifier key (custodian enroll keygen writes one to --pub)")
	}
	if len(signed) > maxRecordSize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrRecordMalformed, maxRecordSize)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return nil, fmt.Errorf("%w (%s+%08x): it is signed by %s", ErrRecordWrongKey, v.Name(), v.KeyHash(), signerNames(unverified.Note))
	case errors.As(err, &invalid):
		return nil, ErrRecordTampered
	case err != nil:
		return nil, fmt.Errorf("%w: not a signed note", ErrRecordMalformed)
	}
	return ParseRecord([]byte(n.Text))
}

// signerNames lists who signed a note, for an error message.
func signerNames(n *note.Note) string {
	var names []string
	for _, s := range n.UnverifiedSigs {
		// Quoted: the name comes from an untrusted record, and %q
		// shows controls, bidi overrides and look-alikes for what they are.
		names = append(names, fmt.Sprintf("%+q (key hash %08x)", s.Name, s.Hash))
	}
	if len(names) == 0 {
		return "nobody"
	}
	return strings.Join(names, ", ")
}

// ParseRecord decodes a record's text and accepts only its canonical form.
func ParseRecord(text []byte) (*Record, error) {
	r, err := parseRecord(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecordMalformed, err)
	}
	return r, nil
}

var recordFields = []string{"custodian", "serial", "ek", "ak", "import-key", "ek-certified", "verdict", "reason", "time", "not-after"}

func parseRecord(text []byte) (*Record, error) {
	if len(text) > maxRecordSize {
		return nil, errors.New("too long")
	}
	lines := strings.Split(string(text), "\n")
	if len(lines) != len(recordFields)+2 || lines[0] != recordHeader || lines[len(lines)-1] != "" {
		return nil, errors.New("want the header and one line per field")
	}
	values := make(map[string]string, len(recordFields))
	for i, name := range recordFields {
		value, ok := strings.CutPrefix(lines[i+1], name+" ")
		if !ok {
			return nil, fmt.Errorf("line %d: want %q", i+2, name)
		}
		values[name] = value
	}
	r, err := recordFromValues(values)
	if err != nil {
		return nil, err
	}
	canonical, err := r.Marshal()
	if err != nil || !bytes.Equal(canonical, text) {
		return nil, errors.New("not in canonical form")
	}
	return r, nil
}

func recordFromValues(v map[string]string) (*Record, error) {
	r := &Record{CustodianID: v["custodian"], Verdict: v["verdict"], Reason: undashed(v["reason"])}
	var err error
	for name, dst := range map[string]*[]byte{"ek": &r.EKName, "ak": &r.AKName, "import-key": &r.ImportKeyName} {
		if *dst, err = hex.DecodeString(v[name]); err != nil {
			return nil, fmt.Errorf("%s is not hex", name)
		}
	}
	switch v["ek-certified"] {
	case "yes":
		r.EKCertified = true
	case "no":
	default:
		return nil, errors.New("ek-certified is yes or no")
	}
	if r.Serial, err = strconv.ParseUint(v["serial"], 10, 64); err != nil {
		return nil, errors.New("serial is not a number")
	}
	if r.Time, err = time.Parse(time.RFC3339, v["time"]); err != nil {
		return nil, errors.New("time is not RFC 3339")
	}
	if r.NotAfter, err = time.Parse(time.RFC3339, v["not-after"]); err != nil {
		return nil, errors.New("not-after is not RFC 3339")
	}
	return r, nil
}

// check validates what Marshal would otherwise write ambiguously.
func (r *Record) check() error {
	if err := ids.CheckCustodian(r.CustodianID); err != nil {
		return err
	}
	for name, n := range map[string][]byte{"ek": r.EKName, "ak": r.AKName, "import-key": r.ImportKeyName} {
		if !isSHA256Name(n) {
			return fmt.Errorf("%s is not a TPM Name (SHA-256)", name)
		}
	}
	switch {
	case r.Verdict == VerdictVerified && r.Reason != "":
		return errors.New("a verified record gives no reason")
	case r.Verdict == VerdictRefused && reasons[r.Reason] == "":
		return fmt.Errorf("reason %q is not one of %s", r.Reason, strings.Join(Reasons, ", "))
	case r.Verdict != VerdictVerified && r.Verdict != VerdictRefused:
		return fmt.Errorf("verdict %q is not verified or refused", r.Verdict)
	case !wholeUTC(r.Time) || !wholeUTC(r.NotAfter):
		return errors.New("time and not-after must be UTC, whole seconds")
	case r.Serial == 0:
		return errors.New("serial starts at 1")
	}
	return nil
}

func wholeUTC(t time.Time) bool {
	return !t.IsZero() && t.Equal(t.UTC().Truncate(time.Second)) && t.Location() == time.UTC
}

// isSHA256Name reports whether n is a TPM Name with a SHA-256 digest, the
// only Name algorithm this system's keys use.
func isSHA256Name(n []byte) bool {
	return len(n) == 34 && n[0] == 0x00 && n[1] == 0x0b
}

// Standing decides, from the records a verifier holds, whether the
// authority vouches for e (whose keys parsed as v) at now. Of the records
// of e's custodian and TPM (its EK Name) the one with the highest serial
// stands; at a tie, a refusal wins. It must be verified, name e's AK and
// import key, and not be past its not-after. Records of other custodians
// or TPMs say nothing about e; if no record is of e's, the first one's
// mismatch is the error.
func Standing(records []*Record, e *Enrollment, v *Verified, now time.Time) (*Record, error) {
	var newest *Record
	for _, r := range records {
		if r.CustodianID != e.CustodianID || !bytes.Equal(r.EKName, v.EK.Name()) {
			continue
		}
		if newest == nil || r.Serial > newest.Serial || (r.Serial == newest.Serial && r.Verdict == VerdictRefused) {
			newest = r
		}
	}
	if newest == nil {
		if len(records) == 0 {
			return nil, fmt.Errorf("%w: no record given", ErrRecordMismatch)
		}
		return nil, records[0].mismatch(e, v)
	}
	if err := newest.mismatch(e, v); err != nil {
		return nil, err
	}
	if newest.Verdict != VerdictVerified {
		return nil, fmt.Errorf("%w on %s (record %d, %s: %s); do not trust %s's attestations unless the authority publishes a newer verified record",
			ErrRecordRefused, newest.Time.Format(time.RFC3339), newest.Serial, newest.Reason, reasons[newest.Reason], newest.CustodianID)
	}
	if now.After(newest.NotAfter) {
		return nil, fmt.Errorf("%w: record %d of %s was good until %s", ErrRecordExpired, newest.Serial, newest.CustodianID, newest.NotAfter.Format(time.RFC3339))
	}
	return newest, nil
}

// mismatch says how r is not a record of e's keys, or nil.
func (r *Record) mismatch(e *Enrollment, v *Verified) error {
	switch {
	case r.CustodianID != e.CustodianID:
		return fmt.Errorf("%w: it is for custodian %s, the enrollment for %s", ErrRecordMismatch, r.CustodianID, e.CustodianID)
	case !bytes.Equal(r.EKName, v.EK.Name()):
		return fmt.Errorf("%w: it names another endorsement key (another TPM) than %s's enrollment", ErrRecordMismatch, e.CustodianID)
	case !bytes.Equal(r.AKName, v.AK.Name()):
		return fmt.Errorf("%w: the record names another attestation key than %s's enrollment", ErrRecordMismatch, e.CustodianID)
	case !bytes.Equal(r.ImportKeyName, v.ImportKey.Name()):
		return fmt.Errorf("%w: the record names another import key than %s's enrollment", ErrRecordMismatch, e.CustodianID)
	}
	return nil
}

// keyNames returns the Names of e's EK, AK and import key.
func (e *Enrollment) keyNames() ([3][]byte, error) {
	var out [3][]byte
	ek, err := tpm.ParseEK(e.EK.PublicKey)
	if err != nil {
		return out, err
	}
	ak, err := tpm.ParseAKPublic(e.AK)
	if err != nil {
		return out, err
	}
	ik, err := tpm.ParseImportKey(e.ImportKey.PublicKey)
	if err != nil {
		return out, err
	}
	return [3][]byte{ek.Name(), ak.Name(), ik.Name()}, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func dashed(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func undashed(s string) string {
	if s == "-" {
		return ""
	}
	return s
}
