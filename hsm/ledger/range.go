package ledger

import (
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"
)

// MaxRange caps the entries one [RangeProof] carries, so that an answer
// stays well under a client's response cap (entries up to 4 KiB each,
// proofs of a few dozen hashes).
const MaxRange = 128

// RangeProof is consecutive entries, each with its inclusion proof, all
// for the tree of one signed checkpoint: an auditor reads a stretch of
// the ledger with one answer instead of one [Inclusion] per entry.
type RangeProof struct {
	Checkpoint string       `json:"checkpoint"`
	Entries    []RangeEntry `json:"entries"`
}

// RangeEntry is one entry of a RangeProof.
type RangeEntry struct {
	Index int64       `json:"index"`
	Entry string      `json:"entry"`
	Proof []tlog.Hash `json:"proof"`
}

// ErrBadRange: the range is empty, inverted, longer than MaxRange, or
// reaches past the ledger's end.
var ErrBadRange = errors.New("bad range of entries")

// CheckRange reports whether entries from to to (inclusive) exist in a
// ledger of size entries, in a form a person can act on.
func CheckRange(from, to, size int64) error {
	last := fmt.Sprintf("the ledger has %d entries, 0 to %d", size, size-1)
	if size == 0 {
		last = "the ledger has no entries"
	}
	switch {
	case from < 0 || to < 0:
		return fmt.Errorf("%w: entry indexes start at 0", ErrBadRange)
	case from >= size:
		return fmt.Errorf("%w: entry %d does not exist yet (%s)", ErrBadRange, from, last)
	case from > to:
		return fmt.Errorf("%w: from %d is after to %d", ErrBadRange, from, to)
	case to >= size:
		return fmt.Errorf("%w: entry %d does not exist yet (%s)", ErrBadRange, to, last)
	}
	return nil
}

// ProveRange returns entries from to to (inclusive, at most MaxRange)
// with inclusion proofs against a fresh checkpoint. It reads only.
func (l *Ledger) ProveRange(from, to int64) (*RangeProof, error) {
	signed, cp, err := l.signedCheckpoint()
	if err != nil {
		return nil, err
	}
	size := int64(cp.Size)
	if err := CheckRange(from, to, size); err != nil {
		return nil, err
	}
	if to-from+1 > MaxRange { // no overflow: 0 <= from <= to now
		return nil, fmt.Errorf("%w: at most %d entries at once", ErrBadRange, MaxRange)
	}
	rp := &RangeProof{Checkpoint: string(signed)}
	// One snapshot for every proof; the tree of the checkpoint's size is
	// a prefix of whatever the ledger holds now.
	err = l.view(func(tx *bolt.Tx) error {
		entries := tx.Bucket(bucketEntries)
		for i := from; i <= to; i++ {
			data := entries.Get(u64(uint64(i)))
			if data == nil {
				return fmt.Errorf("no ledger entry %d", i)
			}
			p, err := tlog.ProveRecord(size, i, txHashReader{tx})
			if err != nil {
				return err
			}
			rp.Entries = append(rp.Entries, RangeEntry{Index: i, Entry: string(data), Proof: p})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rp, nil
}

// Check verifies that rp holds exactly entries from to to, each included
// in the tree of its checkpoint, which verifies with verifierKey. It
// returns the checkpoint and the parsed entries, in order.
func (rp *RangeProof) Check(verifierKey string, from, to int64) (*log.Checkpoint, []*Entry, error) {
	cp, err := VerifyCheckpoint([]byte(rp.Checkpoint), verifierKey)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckRange(from, to, int64(cp.Size)); err != nil {
		return nil, nil, err
	}
	if int64(len(rp.Entries)) != to-from+1 {
		return nil, nil, fmt.Errorf("asked for entries %d to %d, got %d entries", from, to, len(rp.Entries))
	}
	out := make([]*Entry, len(rp.Entries))
	for k, re := range rp.Entries {
		want := from + int64(k)
		if re.Index != want {
			return nil, nil, fmt.Errorf("entry %d came where %d was due", re.Index, want)
		}
		if err := VerifyInclusion(cp, re.Index, []byte(re.Entry), re.Proof); err != nil {
			return nil, nil, fmt.Errorf("entry %d is not in the checkpoint's tree: %w", re.Index, err)
		}
		if out[k], err = ParseEntry([]byte(re.Entry)); err != nil {
			return nil, nil, fmt.Errorf("entry %d: %w", re.Index, err)
		}
	}
	return cp, out, nil
}
