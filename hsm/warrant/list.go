package warrant

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
)

// Envelope lists: a warrant that names more envelopes than fit its signed
// body names them by the tree hash and count of a list that travels
// beside it (docs/warrant.md, "Envelope lists"). The list is
//
//	custodian envelope list v1 <count>\n
//	<canonical JSON of one EnvelopeRef>\n   (count times)
//
// and its tree hash is the RFC 6962 Merkle tree hash (golang.org/x/mod/sumdb/tlog)
// over the entries' JSON lines, without their line breaks. A Merkle tree
// rather than one hash of the file: an entry's inclusion proof
// ([EnvelopeList.Prove]) shows that a warrant covered one envelope without
// showing the other envelopes of the list, which are the target's other
// messages. An inline list (the warrant's own "envelopes") has a tree hash
// too, over the same canonical lines, so every warrant's envelopes reach
// the appliance as one [EnvelopeList] and are checked and logged one way.
const (
	// MaxListEntries caps the envelopes of one list.
	MaxListEntries = 100_000
	// MaxListBytes caps a list file: 100 000 entries of some 330 bytes
	// (short targets) with room to spare; a list of long targets reaches
	// this cap before MaxListEntries.
	MaxListBytes = 64 << 20
	// maxListLine caps one entry line: a target of maxText bytes written
	// with JSON escapes, and the rest.
	maxListLine = 32 << 10
	listHeader  = "custodian envelope list v1 "
)

// Envelope list refusals: each names its own cause.
const (
	ReasonListMalformed  Reason = "envelope_list_malformed"  // not the list format, or an entry that is not canonical
	ReasonListTruncated  Reason = "envelope_list_truncated"  // fewer entries than its header says, or a cut-off line
	ReasonListTooLarge   Reason = "envelope_list_too_large"  // more than MaxListEntries or MaxListBytes
	ReasonListDuplicate  Reason = "envelope_list_duplicate"  // the same envelope twice
	ReasonListMismatch   Reason = "envelope_list_mismatch"   // not the count and tree hash the warrant signs
	ReasonListKeyID      Reason = "envelope_list_key_id"     // an entry for a key ID the warrant does not name
	ReasonListTarget     Reason = "envelope_list_target"     // an entry for a target the warrant does not name
	ReasonListMissing    Reason = "envelope_list_missing"    // the warrant names a list and none came with it
	ReasonListUnexpected Reason = "envelope_list_unexpected" // a list came with a warrant that names none
)

// ListDigest is what a warrant signs of a list that travels beside it.
type ListDigest struct {
	Count    int    `json:"count"`
	TreeHash []byte `json:"tree_hash"`
}

// EnvelopeList is a checked list of envelopes: well formed, no envelope
// twice, with its tree hash. Whether it is the list a warrant signs is
// [Warrant.List]'s to check.
type EnvelopeList struct {
	Entries  []EnvelopeRef
	TreeHash tlog.Hash
	stored   []tlog.Hash // the tree's stored hashes, for proofs
}

// Count is the number of envelopes.
func (l *EnvelopeList) Count() int { return len(l.Entries) }

// For returns the envelopes of keyID, in list order.
func (l *EnvelopeList) For(keyID string) []EnvelopeRef {
	var out []EnvelopeRef
	for _, e := range l.Entries {
		if e.KeyID == keyID {
			out = append(out, e)
		}
	}
	return out
}

// Digest is the list's count and tree hash, as a warrant signs them.
func (l *EnvelopeList) Digest() ListDigest {
	return ListDigest{Count: len(l.Entries), TreeHash: l.TreeHash[:]}
}

// Prove returns the inclusion proof of entry i in the list's tree hash,
// checkable with tlog.CheckRecord against the entry's line.
func (l *EnvelopeList) Prove(i int) (tlog.RecordProof, error) {
	return tlog.ProveRecord(int64(len(l.Entries)), int64(i), l)
}

// ReadHashes implements tlog.HashReader over the stored hashes.
func (l *EnvelopeList) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(l.stored)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = l.stored[x]
	}
	return out, nil
}

// WriteTo writes the list file.
func (l *EnvelopeList) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	var n int64
	k, _ := fmt.Fprintf(bw, "%s%d\n", listHeader, len(l.Entries))
	n += int64(k)
	for _, e := range l.Entries {
		line, err := entryLine(e)
		if err != nil {
			return n, err
		}
		k, _ := bw.Write(append(line, '\n'))
		n += int64(k)
	}
	return n, bw.Flush()
}

// entryLine is an entry's canonical JSON: what the list holds and the
// tree hashes.
func entryLine(e EnvelopeRef) ([]byte, error) { return json.Marshal(e) }

// listBuilder adds entries one by one, checking each and hashing it into
// the tree as it comes, so a list is never held twice.
type listBuilder struct {
	l    EnvelopeList
	seen map[string]int
}

func newListBuilder(capacity int) *listBuilder {
	return &listBuilder{l: EnvelopeList{Entries: make([]EnvelopeRef, 0, capacity)}, seen: make(map[string]int, capacity)}
}

// add checks one entry, given as its line (nil: encode e), and adds it.
func (b *listBuilder) add(e EnvelopeRef, line []byte) error {
	n := len(b.l.Entries) + 1
	if err := checkListEntry(n, e); err != nil {
		return err
	}
	k := e.KeyID + "\x00" + string(e.Enc)
	if prev, ok := b.seen[k]; ok {
		return refuse(ReasonListDuplicate, "envelope list entry %d repeats entry %d (the same envelope of key ID %q); name each envelope once", n, prev, e.KeyID)
	}
	b.seen[k] = n
	if line == nil {
		var err error
		if line, err = entryLine(e); err != nil {
			return refuseErr(ReasonListMalformed, err, "envelope list entry %d does not encode", n)
		}
	}
	hashes, err := tlog.StoredHashes(int64(len(b.l.Entries)), line, &b.l)
	if err != nil {
		return err
	}
	b.l.stored = append(b.l.stored, hashes...)
	b.l.Entries = append(b.l.Entries, e)
	return nil
}

func (b *listBuilder) done() (*EnvelopeList, error) {
	h, err := tlog.TreeHash(int64(len(b.l.Entries)), &b.l)
	if err != nil {
		return nil, err
	}
	b.l.TreeHash = h
	return &b.l, nil
}

// checkListEntry checks what the list format itself fixes about an entry:
// a valid key ID, a displayable target, and an enc that is a P-256 point.
// The seal proof is the appliance's to check (escrow.CheckSealProof).
func checkListEntry(n int, e EnvelopeRef) error {
	if err := ids.CheckKeyID(e.KeyID); err != nil {
		return refuseErr(ReasonListMalformed, err, "envelope list entry %d has no valid key ID", n)
	}
	if err := checkText("target", e.Target); err != nil {
		return refuseErr(ReasonListMalformed, err, "envelope list entry %d has no valid target", n)
	}
	if len(e.Enc) != 65 {
		return refuse(ReasonListMalformed, "envelope list entry %d enc is %d bytes, want 65 (an uncompressed P-256 point)", n, len(e.Enc))
	}
	if _, err := ecdh.P256().NewPublicKey(e.Enc); err != nil {
		return refuseErr(ReasonListMalformed, err, "envelope list entry %d enc is not a P-256 point", n)
	}
	return nil
}

// ListOf makes the list of refs, checked as a list file is: for an inline
// list, and for writing a list file.
func ListOf(refs []EnvelopeRef) (*EnvelopeList, error) {
	if len(refs) > MaxListEntries {
		return nil, refuse(ReasonListTooLarge, "%d envelopes; a list holds at most %d: split the warrant", len(refs), MaxListEntries)
	}
	b := newListBuilder(len(refs))
	for _, e := range refs {
		if err := b.add(e, nil); err != nil {
			return nil, err
		}
	}
	return b.done()
}

// ReadEnvelopeList reads a list file from r, entry by entry, with hard
// caps: at most MaxListBytes, MaxListEntries entries and maxListLine per
// line. Each entry must be the canonical JSON of an EnvelopeRef (strict:
// exactly its fields, once), so a list has one encoding and one tree
// hash. The reader is read to its end: anything after the last entry is
// refused.
func ReadEnvelopeList(r io.Reader) (*EnvelopeList, error) {
	lr := &io.LimitedReader{R: r, N: MaxListBytes + 1}
	br := bufio.NewReaderSize(lr, 64<<10)
	tooLarge := func() error {
		return refuse(ReasonListTooLarge, "the envelope list is larger than %d bytes; split the warrant", MaxListBytes)
	}
	header, err := readListLine(br, len(listHeader)+8)
	if err != nil {
		if lr.N <= 0 {
			return nil, tooLarge()
		}
		return nil, listLineError(0, err)
	}
	count, err := parseListHeader(header)
	if err != nil {
		return nil, err
	}
	b := newListBuilder(min(count, 4096))
	for n := 1; n <= count; n++ {
		line, err := readListLine(br, maxListLine)
		if err != nil {
			if lr.N <= 0 {
				return nil, tooLarge()
			}
			return nil, listLineError(n, err)
		}
		var e EnvelopeRef
		if err := strictjson.Decode(line, &e, maxListLine); err != nil {
			return nil, refuseErr(ReasonListMalformed, err, "envelope list entry %d is not an envelope reference", n)
		}
		if canon, err := entryLine(e); err != nil || !bytes.Equal(canon, line) {
			return nil, refuse(ReasonListMalformed, "envelope list entry %d is not in canonical form (compact JSON, fields in order, as custodian warrant new writes it)", n)
		}
		if err := b.add(e, line); err != nil {
			return nil, err
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if lr.N <= 0 {
			return nil, tooLarge()
		}
		return nil, refuse(ReasonListMalformed, "the envelope list has data after its %d entries", count)
	}
	return b.done()
}

var errCutOff = errors.New("cut off")

// readListLine returns one line without its line break. A last line
// without one is cut off; a line longer than max is refused.
func readListLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > max+1 {
			return nil, errLineTooLong
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil, errCutOff
		default:
			return nil, err
		}
	}
}

var errLineTooLong = errors.New("line too long")

func listLineError(n int, err error) error {
	what := "header"
	if n > 0 {
		what = "entry " + strconv.Itoa(n)
	}
	switch {
	case errors.Is(err, errCutOff):
		return refuse(ReasonListTruncated, "the envelope list ends before its %s is complete: the file was cut off; send the whole list", what)
	case errors.Is(err, errLineTooLong):
		return refuse(ReasonListMalformed, "envelope list %s is longer than %d bytes", what, maxListLine)
	}
	return refuseErr(ReasonListTruncated, err, "the envelope list could not be read to its end (%s)", what)
}

func parseListHeader(line []byte) (int, error) {
	s, ok := strings.CutPrefix(string(line), listHeader)
	n, err := strconv.Atoi(s)
	if !ok || err != nil || strconv.Itoa(n) != s {
		return 0, refuse(ReasonListMalformed, "the envelope list does not begin with %q and its count", listHeader+"N")
	}
	switch {
	case n < 1:
		return 0, refuse(ReasonListMalformed, "the envelope list names no envelope")
	case n > MaxListEntries:
		return 0, refuse(ReasonListTooLarge, "the envelope list has %d entries; at most %d: split the warrant", n, MaxListEntries)
	}
	return n, nil
}
