package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custodian-project/custodian/hsm/ids"
)

// Kind says what an entry records.
type Kind string

// The kinds of entry. Every release and every refusal is one; so is every
// change to what the appliance trusts or holds.
const (
	KindInit      Kind = "init"      // the ledger was created
	KindRelease   Kind = "release"   // a share left the appliance
	KindRefusal   Kind = "refusal"   // a request was refused
	KindProvision Kind = "provision" // a share bundle was stored
	KindTrust     Kind = "trust"     // the court trust store changed
	KindReseal    Kind = "reseal"    // shares were resealed to a new image
	KindResolve   Kind = "resolve"   // an operator resolved a rollback
	KindFailure   Kind = "failure"   // an operation failed after its entry
	KindFloor     Kind = "floor"     // the TPM's security version floor was raised
	// KindUnverified counts, by reason, the requests refused over an
	// interval before anyone accountable was known to stand behind them
	// (malformed, unsigned or unverifiable submissions, busy, rate
	// limited): they get no entry of their own, so that nobody outside the
	// appliance can make it write its TPM's NV.
	KindUnverified Kind = "unverified"
)

var kinds = map[Kind]bool{
	KindInit: true, KindRelease: true, KindRefusal: true, KindProvision: true,
	KindTrust: true, KindReseal: true, KindResolve: true, KindFailure: true,
	KindUnverified: true, KindFloor: true,
}

// Entry is one record of the ledger. It is public: it holds commitments
// to what it is about, never the contents. The salt that opens a
// commitment is kept on the appliance ([Ledger.Salt]) and given only to
// the court officer's client of the request, so the court can later prove
// which warrant an entry was about (package opening).
type Entry struct {
	Time       time.Time // UTC, whole seconds
	Kind       Kind
	Counter    uint64 // the TPM NV counter value this entry consumed
	Commitment []byte // SHA-256(salt || subject), or nil
	Outcome    string // "ok" or "refused"
	Reason     string // a refusal's code, or "" for none
	KeyID      string // the key ID concerned, or "" for none
	// Counts is a KindUnverified entry's tally: refusals by reason (each
	// a code, each count at least 1). Every other kind has none.
	Counts map[string]uint64
}

// Outcomes.
const (
	OutcomeOK      = "ok"
	OutcomeRefused = "refused"
)

// ReasonInterrupted is the reason of what a restart logs for a request
// the appliance stopped in: a failure after a key ID's release entry, or a
// refusal of a key ID approved and never released. Either may be written
// after the warrant's window closed.
const ReasonInterrupted = "interrupted"

// The entry encoding is a fixed sequence of "name value" lines; "-" stands
// for an empty value. It is readable by people and has one canonical form:
//
//	custodian ledger entry v1
//	time 2026-11-25T12:00:00Z
//	kind release
//	counter 43
//	commitment 9f86d0…(64 hex) | -
//	outcome ok
//	reason - | no-press
//	key-id 2026-11 | -
//
// An unverified entry (and only one) has one more line, its tally, reasons
// in byte order, at least one and at most [MaxCounts]:
//
//	counts bad_signature=3 busy=12 malformed_cms=4
const (
	entryHeader  = "custodian ledger entry v1"
	maxEntrySize = 4096
)

// MaxCounts is the most reasons one unverified entry counts.
const MaxCounts = 64

var (
	tokenPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
)

// ErrMalformedEntry wraps every entry decoding error.
var ErrMalformedEntry = errors.New("malformed ledger entry")

// Commit returns the commitment to subject under salt.
func Commit(salt, subject []byte) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write(subject)
	return h.Sum(nil)
}

// check validates the fields an encoder would otherwise write ambiguously.
func (e *Entry) check() error {
	switch {
	case !kinds[e.Kind]:
		return fmt.Errorf("unknown kind %q", e.Kind)
	case e.Time.IsZero() || !e.Time.Equal(e.Time.UTC().Truncate(time.Second)):
		return errors.New("time must be whole seconds")
	case e.Commitment != nil && len(e.Commitment) != sha256.Size:
		return errors.New("commitment must be a SHA-256 digest")
	case e.Outcome != OutcomeOK && e.Outcome != OutcomeRefused:
		return fmt.Errorf("unknown outcome %q", e.Outcome)
	case e.Reason != "" && !tokenPattern.MatchString(e.Reason):
		return fmt.Errorf("reason %q is not a code", e.Reason)
	case e.KeyID != "" && ids.CheckKeyID(e.KeyID) != nil:
		return ids.CheckKeyID(e.KeyID)
	case e.Kind != KindUnverified && e.Counts != nil:
		return fmt.Errorf("a %s entry has no counts", e.Kind)
	case e.Kind == KindUnverified && (e.Commitment != nil || e.Outcome != OutcomeRefused || e.Reason != "" || e.KeyID != ""):
		return errors.New("an unverified entry has outcome refused and no commitment, reason or key ID: its reasons are in its counts")
	case e.Kind == KindUnverified:
		return checkCounts(e.Counts)
	}
	return nil
}

func checkCounts(counts map[string]uint64) error {
	if len(counts) == 0 || len(counts) > MaxCounts {
		return fmt.Errorf("an unverified entry counts 1 to %d reasons, not %d", MaxCounts, len(counts))
	}
	for reason, n := range counts {
		if !tokenPattern.MatchString(reason) {
			return fmt.Errorf("counted reason %q is not a code", reason)
		}
		if n == 0 {
			return fmt.Errorf("counted reason %q has a zero count", reason)
		}
	}
	return nil
}

// countsLine encodes a tally as "reason=n" words in byte order.
func countsLine(counts map[string]uint64) string {
	reasons := make([]string, 0, len(counts))
	for r := range counts {
		reasons = append(reasons, r)
	}
	slices.Sort(reasons)
	words := make([]string, len(reasons))
	for i, r := range reasons {
		words[i] = r + "=" + strconv.FormatUint(counts[r], 10)
	}
	return strings.Join(words, " ")
}

func parseCounts(line string) (map[string]uint64, error) {
	words := strings.Split(line, " ")
	if len(words) > MaxCounts {
		return nil, fmt.Errorf("more than %d counted reasons", MaxCounts)
	}
	counts := make(map[string]uint64, len(words))
	for _, w := range words {
		reason, n, ok := strings.Cut(w, "=")
		if !ok {
			return nil, fmt.Errorf("count %q is not reason=n", w)
		}
		v, err := strconv.ParseUint(n, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("count of %q: %v", reason, err)
		}
		if _, dup := counts[reason]; dup {
			return nil, fmt.Errorf("reason %q counted twice", reason)
		}
		counts[reason] = v
	}
	return counts, nil
}

// Marshal encodes e. It fails only for an entry that check refuses.
func (e *Entry) Marshal() ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	commitment := "-"
	if e.Commitment != nil {
		commitment = hex.EncodeToString(e.Commitment)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\ntime %s\nkind %s\ncounter %d\ncommitment %s\noutcome %s\nreason %s\nkey-id %s\n",
		entryHeader, e.Time.UTC().Format(time.RFC3339), e.Kind, e.Counter, commitment,
		e.Outcome, dash(e.Reason), dash(e.KeyID))
	if e.Kind == KindUnverified {
		fmt.Fprintf(&b, "counts %s\n", countsLine(e.Counts))
	}
	if b.Len() > maxEntrySize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrMalformedEntry, maxEntrySize)
	}
	return b.Bytes(), nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func undash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// ParseEntry decodes an entry and accepts only its canonical encoding.
func ParseEntry(data []byte) (*Entry, error) {
	e, err := parseEntry(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedEntry, err)
	}
	return e, nil
}

var (
	entryFields      = []string{"time", "kind", "counter", "commitment", "outcome", "reason", "key-id"}
	unverifiedFields = append(slices.Clip(entryFields), "counts")
)

func parseEntry(data []byte) (*Entry, error) {
	if len(data) > maxEntrySize {
		return nil, errors.New("too long")
	}
	lines := strings.Split(string(data), "\n")
	fields := entryFields
	if len(lines) > 3 && lines[2] == "kind "+string(KindUnverified) {
		fields = unverifiedFields
	}
	if len(lines) != len(fields)+2 || lines[0] != entryHeader || lines[len(lines)-1] != "" {
		return nil, errors.New("wrong header or line count")
	}
	values := make(map[string]string, len(fields))
	for i, name := range fields {
		v, ok := strings.CutPrefix(lines[i+1], name+" ")
		if !ok || v == "" {
			return nil, fmt.Errorf("line %d: want %q", i+2, name)
		}
		values[name] = v
	}
	e, err := entryFromValues(values)
	if err != nil {
		return nil, err
	}
	// One canonical form: re-encoding must give back the same bytes.
	again, err := e.Marshal()
	if err != nil || !bytes.Equal(again, data) {
		return nil, errors.New("not in canonical form")
	}
	return e, nil
}

func entryFromValues(v map[string]string) (*Entry, error) {
	t, err := time.Parse(time.RFC3339, v["time"])
	if err != nil {
		return nil, fmt.Errorf("time: %v", err)
	}
	counter, err := strconv.ParseUint(v["counter"], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("counter: %v", err)
	}
	var commitment []byte
	if c := undash(v["commitment"]); c != "" {
		if commitment, err = hex.DecodeString(c); err != nil {
			return nil, fmt.Errorf("commitment: %v", err)
		}
	}
	e := &Entry{
		Time: t.UTC(), Kind: Kind(v["kind"]), Counter: counter, Commitment: commitment,
		Outcome: v["outcome"], Reason: undash(v["reason"]), KeyID: undash(v["key-id"]),
	}
	if c, ok := v["counts"]; ok {
		if e.Counts, err = parseCounts(c); err != nil {
			return nil, fmt.Errorf("counts: %v", err)
		}
	}
	return e, nil
}
