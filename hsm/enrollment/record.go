package enrollment

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
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
// AK as the authority did ([VerifyOptions.Record]).
//
// A record is a C2SP signed note (golang.org/x/mod/sumdb/note, Ed25519)
// signed with the authority's record key ([NewRecordKey]), whose text is a
// fixed sequence of lines with one canonical form:
//
//	custodian enrollment record v1
//	custodian court-a
//	ek 000b…(68 hex)
//	ak 000b…(68 hex)
//	import-key 000b…(68 hex)
//	ek-certified yes | no
//	verdict verified | refused
//	reason - | ak-unbound | ek-uncertified | does-not-verify
//	time 2026-11-25T12:00:00Z
//
// A verified record is written only for an enrollment whose AK answered
// the authority's challenge; a refused one says the authority would not
// trust the device, and verifies nothing.
type Record struct {
	CustodianID   string
	EKName        []byte
	AKName        []byte
	ImportKeyName []byte
	EKCertified   bool // always false in a refused record, which vouches for nothing
	Verdict       string
	Reason        string // "" for a verified record
	Time          time.Time
}

// Verdicts and the reasons of a refused record.
const (
	VerdictVerified = "verified"
	VerdictRefused  = "refused"

	ReasonAKUnbound     = "ak-unbound"
	ReasonEKUncertified = "ek-uncertified"
	ReasonDoesNotVerify = "does-not-verify"
)

const (
	recordHeader         = "custodian enrollment record v1"
	maxRecordSize        = 4096
	defaultRecordKeyName = "custodian-escrow-authority"
)

// reasons say in words what each refusal code means.
var reasons = map[string]string{
	ReasonAKUnbound:     "its attestation key did not answer the authority's challenge",
	ReasonEKUncertified: "its endorsement key has no manufacturer certificate",
	ReasonDoesNotVerify: "its enrollment does not verify",
}

// Errors a holder of a record acts on: each says why the record cannot
// stand in for the challenge secret.
var (
	// ErrRecordWrongKey: the record is not signed by the pinned key.
	ErrRecordWrongKey = errors.New("the enrollment record is not signed by the escrow authority's key you pinned")
	// ErrRecordTampered: the record names the pinned key, but its text or
	// signature was changed after signing.
	ErrRecordTampered = errors.New("the enrollment record was altered after the escrow authority signed it")
	// ErrRecordMalformed: not a record at all.
	ErrRecordMalformed = errors.New("not an enrollment record")
	// ErrRecordMismatch: a genuine record, but of another custodian, TPM,
	// attestation key or import key than the enrollment shows.
	ErrRecordMismatch = errors.New("the enrollment record is for another device")
	// ErrRecordRefused: the authority's verdict on the enrollment was
	// that it does not verify.
	ErrRecordRefused = errors.New("the escrow authority refused this enrollment")
)

// NewRecordKey makes the authority's record key named name ("" for the
// default): the private key in signed-note form (it stays with the
// authority) and its verifier key (published).
func NewRecordKey(name string) (private, verifier string, err error) {
	if name == "" {
		name = defaultRecordKeyName
	}
	return note.GenerateKey(rand.Reader, name)
}

// VerifiedRecord states that e verified as v says, at now. It refuses an
// enrollment whose AK is not proven by the challenge: a record of one
// would vouch for what the authority never checked.
func VerifiedRecord(e *Enrollment, v *Verified, now time.Time) (*Record, error) {
	if !v.AKBound {
		return nil, fmt.Errorf("%w: a record is written only for an enrollment verified with its challenge secret", ErrAKUnbound)
	}
	return &Record{
		CustodianID: e.CustodianID, EKName: v.EK.Name(), AKName: v.AK.Name(), ImportKeyName: v.ImportKey.Name(),
		EKCertified: v.EKCertified, Verdict: VerdictVerified, Time: now.UTC().Truncate(time.Second),
	}, nil
}

// RefusedRecord states that e did not verify, for the reason cause (the
// error Verify returned). It needs e's EK, AK and import key to name the
// device; an enrollment without readable keys gets no record.
func RefusedRecord(e *Enrollment, cause error, now time.Time) (*Record, error) {
	names, err := e.keyNames()
	if err != nil {
		return nil, err
	}
	reason := ReasonDoesNotVerify
	switch {
	case errors.Is(cause, ErrAKUnbound):
		reason = ReasonAKUnbound
	case errors.Is(cause, ErrEKUncertified):
		reason = ReasonEKUncertified
	}
	return &Record{
		CustodianID: e.CustodianID, EKName: names[0], AKName: names[1], ImportKeyName: names[2],
		EKCertified: false, Verdict: VerdictRefused, Reason: reason, Time: now.UTC().Truncate(time.Second),
	}, nil
}

// Marshal encodes r's text in its canonical form.
func (r *Record) Marshal() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRecordMalformed, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\ncustodian %s\nek %x\nak %x\nimport-key %x\nek-certified %s\nverdict %s\nreason %s\ntime %s\n",
		recordHeader, r.CustodianID, r.EKName, r.AKName, r.ImportKeyName, yesNo(r.EKCertified),
		r.Verdict, dashed(r.Reason), r.Time.Format(time.RFC3339))
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
// returns the record. It does not judge the verdict: [Record.Vouches]
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
		names = append(names, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
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

var recordFields = []string{"custodian", "ek", "ak", "import-key", "ek-certified", "verdict", "reason", "time"}

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
	if r.Time, err = time.Parse(time.RFC3339, v["time"]); err != nil {
		return nil, errors.New("time is not RFC 3339")
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
		return fmt.Errorf("reason %q is not one of ak-unbound, ek-uncertified, does-not-verify", r.Reason)
	case r.Verdict != VerdictVerified && r.Verdict != VerdictRefused:
		return fmt.Errorf("verdict %q is not verified or refused", r.Verdict)
	case r.Time.IsZero() || !r.Time.Equal(r.Time.UTC().Truncate(time.Second)) || r.Time.Location() != time.UTC:
		return errors.New("time must be UTC, whole seconds")
	}
	return nil
}

// isSHA256Name reports whether n is a TPM Name with a SHA-256 digest, the
// only Name algorithm this system's keys use.
func isSHA256Name(n []byte) bool {
	return len(n) == 34 && n[0] == 0x00 && n[1] == 0x0b
}

// Vouches checks that r is a record of the enrollment e, whose keys
// parsed as v (same custodian ID, EK, AK and import key), and that its
// verdict is verified.
func (r *Record) Vouches(e *Enrollment, v *Verified) error {
	switch {
	case r.CustodianID != e.CustodianID:
		return fmt.Errorf("%w: it is for custodian %s, the enrollment for %s", ErrRecordMismatch, r.CustodianID, e.CustodianID)
	case !bytes.Equal(r.EKName, v.EK.Name()):
		return fmt.Errorf("%w: it names another endorsement key (another TPM) than %s's enrollment", ErrRecordMismatch, e.CustodianID)
	case !bytes.Equal(r.AKName, v.AK.Name()):
		return fmt.Errorf("%w: it names another attestation key than %s's enrollment", ErrRecordMismatch, e.CustodianID)
	case !bytes.Equal(r.ImportKeyName, v.ImportKey.Name()):
		return fmt.Errorf("%w: it names another import key than %s's enrollment", ErrRecordMismatch, e.CustodianID)
	}
	if r.Verdict != VerdictVerified {
		return fmt.Errorf("%w on %s (%s: %s); do not trust %s's attestations until it enrolls again and the authority verifies it",
			ErrRecordRefused, r.Time.Format(time.RFC3339), r.Reason, reasons[r.Reason], r.CustodianID)
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
