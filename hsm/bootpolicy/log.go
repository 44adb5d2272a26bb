package bootpolicy

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-eventlog/cel"
	pb "github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"

	"github.com/custodian-project/custodian/tpm"
)

// maxLogSize caps a boot event log. A genuine one is a few hundred bytes.
const maxLogSize = 64 << 10

// ParseLog decodes a Canonical Event Log written by measure-boot into its
// events. It refuses records that are not SHA-256 PCR events with
// custodian content, records out of sequence, and any record whose digest
// does not match its content.
func ParseLog(data []byte) ([]Event, error) {
	if len(data) > maxLogSize {
		return nil, fmt.Errorf("event log: %d bytes, at most %d allowed", len(data), maxLogSize)
	}
	// cel.DecodeToCEL allocates whatever length a TLV header claims before
	// reading it; check every header against the bytes there first.
	if err := checkTLVLengths(data); err != nil {
		return nil, err
	}
	log, err := cel.DecodeToCEL(bytes.NewBuffer(data))
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	recs := log.Records()
	if len(recs) > maxEvents {
		return nil, fmt.Errorf("event log: %d records, at most %d allowed", len(recs), maxEvents)
	}
	events := make([]Event, 0, len(recs))
	for i, r := range recs {
		e, err := eventOf(r)
		if err != nil {
			return nil, fmt.Errorf("event log: record %d: %w", i, err)
		}
		if r.RecNum != uint64(i) {
			return nil, fmt.Errorf("event log: record %d is numbered %d", i, r.RecNum)
		}
		events = append(events, e)
	}
	return events, nil
}

func checkTLVLengths(data []byte) error {
	for len(data) > 0 {
		if len(data) < 5 {
			return errors.New("event log: truncated record")
		}
		n := binary.BigEndian.Uint32(data[1:5])
		if uint64(n) > uint64(len(data)-5) {
			return errors.New("event log: a field is longer than the log")
		}
		data = data[5+n:]
	}
	return nil
}

func eventOf(r cel.Record) (Event, error) {
	if r.IndexType != cel.PCRType {
		return Event{}, errors.New("not a PCR event")
	}
	if len(r.Digests) != 1 || len(r.Digests[crypto.SHA256]) == 0 {
		return Event{}, errors.New("want exactly one digest, SHA-256")
	}
	if r.Content.Type != ContentType {
		return Event{}, fmt.Errorf("content type %d is not a custodian event", r.Content.Type)
	}
	var inner cel.TLV
	if len(r.Content.Value) < 5 {
		return Event{}, errors.New("content too short")
	}
	if err := inner.UnmarshalBinary(r.Content.Value); err != nil {
		return Event{}, err
	}
	if len(inner.Value) < 32 {
		return Event{}, errors.New("content too short")
	}
	e := Event{
		PCR:      int(r.Index),
		Kind:     Kind(inner.Type),
		Name:     string(inner.Value[32:]),
		Measured: bytes.Clone(inner.Value[:32]),
		Digest:   bytes.Clone(r.Digests[crypto.SHA256]),
	}
	if err := e.check(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// EncodeLog writes events as a Canonical Event Log, without touching a
// TPM.
func EncodeLog(events []Event) ([]byte, error) {
	return Record(events, func(int, []byte) error { return nil })
}

// Record calls extend for each event in order, as its record is added to a
// Canonical Event Log, and returns the log. measure-boot passes a TPM
// extend; it stops at the first error.
func Record(events []Event, extend func(pcr int, digest []byte) error) ([]byte, error) {
	log := cel.NewPCR()
	extender := func(_ crypto.Hash, pcr int, digest []byte) error { return extend(pcr, digest) }
	for _, e := range events {
		if err := log.AppendEvent(e.Content(), []crypto.Hash{crypto.SHA256}, e.PCR, extender); err != nil {
			return nil, err
		}
	}
	var b bytes.Buffer
	if err := log.EncodeCEL(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// VerifyLog checks that the log data replays to pcrs (with go-eventlog's
// replay, an implementation independent of ours) and that its events are
// exactly those of the policy. It returns the log's events.
func (p *Policy) VerifyLog(data []byte, pcrs tpm.PCRValues) ([]Event, error) {
	events, err := ParseLog(data)
	if err != nil {
		return nil, err
	}
	log, err := cel.DecodeToCEL(bytes.NewBuffer(data))
	if err != nil {
		return nil, err
	}
	if err := log.Replay(bank(pcrs)); err != nil {
		return nil, fmt.Errorf("event log does not match the PCRs: %w", err)
	}
	if len(events) != len(p.Events) {
		return nil, fmt.Errorf("event log has %d events, the policy %d", len(events), len(p.Events))
	}
	for i, e := range events {
		if !e.equal(p.Events[i]) {
			return nil, fmt.Errorf("event %d: the log has %s %q, the policy expects %s %q", i, e.Kind, e.Name, p.Events[i].Kind, p.Events[i].Name)
		}
	}
	return events, nil
}

func (e Event) equal(o Event) bool {
	return e.PCR == o.PCR && e.Kind == o.Kind && e.Name == o.Name &&
		bytes.Equal(e.Measured, o.Measured) && bytes.Equal(e.Digest, o.Digest)
}

func bank(pcrs tpm.PCRValues) register.PCRBank {
	b := register.PCRBank{TCGHashAlgo: pb.HashAlgo_SHA256}
	for _, i := range pcrs.Indices() {
		b.PCRs = append(b.PCRs, register.PCR{Index: i, Digest: pcrs[i], DigestAlg: crypto.SHA256})
	}
	return b
}
