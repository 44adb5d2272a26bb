package ledger

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/transparency-dev/formats/log"
)

// MaxCheckpointSize caps a signed checkpoint an auditor will parse: the
// log's own signed note (under 4096 bytes) and room for 16 witness
// cosignature lines of at most 256 bytes each, so that a checkpoint
// cosigned by an escrow file's witnesses is read everywhere
// (witness.MaxCosignedSize is the same bound).
const MaxCheckpointSize = 4096 + 16*256

// Checkpoint signs the current tree head: a C2SP tlog-checkpoint (origin,
// size, base64 root hash) in a C2SP signed note.
func (l *Ledger) Checkpoint() ([]byte, error) {
	signed, _, err := l.signedCheckpoint()
	return signed, err
}

// CheckpointSize is Checkpoint with the size of the tree it signs.
func (l *Ledger) CheckpointSize() ([]byte, int64, error) {
	signed, cp, err := l.signedCheckpoint()
	if err != nil {
		return nil, 0, err
	}
	return signed, int64(cp.Size), nil
}

func (l *Ledger) signedCheckpoint() ([]byte, *log.Checkpoint, error) {
	if l.cfg.Signer == nil {
		return nil, nil, fmt.Errorf("%w: the signing key did not unseal", ErrNoSigner)
	}
	var cp log.Checkpoint
	err := l.view(func(tx *bolt.Tx) error {
		n := l.sizeIn(tx)
		h, err := tlog.TreeHash(n, txHashReader{tx})
		cp = log.Checkpoint{Origin: l.cfg.Origin, Size: uint64(n), Hash: h[:]}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	signed, err := note.Sign(&note.Note{Text: string(cp.Marshal())}, l.cfg.Signer)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNoSigner, err)
	}
	return signed, &cp, nil
}

// sizeIn reads the committed size inside a read transaction, so a proof
// and the tree it is for are always from the same snapshot.
func (l *Ledger) sizeIn(tx *bolt.Tx) int64 {
	var s state
	if err := s.load(tx.Bucket(bucketMeta)); err != nil {
		return 0
	}
	return s.size
}

// InclusionProof proves that entry i is in the tree of the given size.
func (l *Ledger) InclusionProof(i, size int64) (tlog.RecordProof, error) {
	var p tlog.RecordProof
	err := l.view(func(tx *bolt.Tx) error {
		if err := checkRange(i, size, l.sizeIn(tx)); err != nil {
			return err
		}
		var err error
		p, err = tlog.ProveRecord(size, i, txHashReader{tx})
		return err
	})
	return p, err
}

// ConsistencyProof proves that the tree of size old is a prefix of the
// tree of size size.
func (l *Ledger) ConsistencyProof(old, size int64) (tlog.TreeProof, error) {
	var p tlog.TreeProof
	err := l.view(func(tx *bolt.Tx) error {
		if old < 1 {
			return errors.New("a consistency proof needs an older tree of at least one entry")
		}
		if err := checkRange(old-1, size, l.sizeIn(tx)); err != nil {
			return err
		}
		var err error
		p, err = tlog.ProveTree(size, old, txHashReader{tx})
		return err
	})
	return p, err
}

func checkRange(i, size, have int64) error {
	if size < 1 || size > have {
		return fmt.Errorf("the ledger has %d entries; no tree of size %d", have, size)
	}
	if i < 0 || i >= size {
		return fmt.Errorf("entry %d is not in a tree of %d entries", i, size)
	}
	return nil
}

// ErrBadCheckpoint wraps every reason a checkpoint is not accepted.
var ErrBadCheckpoint = errors.New("checkpoint does not verify")

// ErrNoSigner: the appliance cannot sign a checkpoint now (its key did not
// unseal on this image, or the signer failed).
var ErrNoSigner = errors.New("no checkpoint signer")

// VerifyCheckpoint checks a signed checkpoint against the appliance's
// verifier key and returns it. The origin must be the key's name.
func VerifyCheckpoint(signed []byte, verifierKey string) (*log.Checkpoint, error) {
	if len(signed) > MaxCheckpointSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCheckpoint, len(signed))
	}
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, fmt.Errorf("verifier key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadCheckpoint, noteProblem(err, v.Name()))
	}
	var cp log.Checkpoint
	rest, err := cp.Unmarshal([]byte(n.Text))
	if err != nil {
		return nil, fmt.Errorf("%w: its text is not a checkpoint (origin, size, root hash)", ErrBadCheckpoint)
	}
	if len(rest) != 0 || cp.Origin != v.Name() || len(cp.Hash) != tlog.HashSize {
		return nil, fmt.Errorf("%w: not a checkpoint of %s", ErrBadCheckpoint, v.Name())
	}
	return &cp, nil
}

// noteProblem says in words why note.Open refused a checkpoint, without
// the library's own text.
func noteProblem(err error, key string) string {
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		return "it is not signed by " + key
	case errors.As(err, &invalid):
		return "its signature by " + key + " does not match its text (altered, or signed by a key named like it)"
	}
	return "not a signed note"
}

// VerifyInclusion checks that entry (its encoded bytes) is entry i of the
// tree a checkpoint commits to.
func VerifyInclusion(cp *log.Checkpoint, i int64, entry []byte, proof tlog.RecordProof) error {
	return tlog.CheckRecord(proof, int64(cp.Size), tlog.Hash(cp.Hash), i, tlog.RecordHash(entry))
}

// ErrTwoHistories is the answer of CheckExtends when two checkpoints, both
// verified, cannot be one history: the ledger went back or forked. The two
// signed checkpoints are the evidence of it. The errors that match it say
// only how the trees differ, so that each reader can say what follows.
var ErrTwoHistories = errors.New("two signed checkpoints that are not one history")

// twoHistories is a refusal of CheckExtends, in its words; it is
// ErrTwoHistories.
type twoHistories string

func (e twoHistories) Error() string        { return string(e) }
func (e twoHistories) Is(target error) bool { return target == ErrTwoHistories }

// CheckExtends checks that the tree of newer extends the tree of old, a
// checkpoint of the same log seen before: the same tree, or old's entries
// followed by more. Only then, and when old has entries, it asks prove for
// the consistency proof from old's size to newer's (as a ledger's
// ConsistencyProof does) and checks it. An error of prove is returned as it
// is; a tree that does not extend old's is ErrTwoHistories, in the one
// wording every reader of the ledger uses.
func CheckExtends(old, newer *log.Checkpoint, prove func(old, size int64) (tlog.TreeProof, error)) error {
	switch {
	case newer.Size < old.Size:
		return twoHistories(fmt.Sprintf("the signed tree of %d entries is smaller than the signed tree of %d seen before", newer.Size, old.Size))
	case newer.Size == old.Size && !bytes.Equal(newer.Hash, old.Hash):
		return twoHistories(fmt.Sprintf("two signed trees of %d entries with different root hashes", newer.Size))
	case newer.Size == old.Size || old.Size == 0: // every tree extends the empty one
		return nil
	}
	proof, err := prove(int64(old.Size), int64(newer.Size))
	if err != nil {
		return err
	}
	if tlog.CheckTree(proof, int64(newer.Size), tlog.Hash(newer.Hash), int64(old.Size), tlog.Hash(old.Hash)) != nil {
		return twoHistories(fmt.Sprintf("the signed tree of %d entries does not extend the signed tree of %d seen before", newer.Size, old.Size))
	}
	return nil
}

// Inclusion is an entry with everything an auditor needs to check it is in
// the ledger: the signed checkpoint, and the proof for its tree size.
type Inclusion struct {
	Index      int64       `json:"index"`
	Entry      string      `json:"entry"`
	Proof      []tlog.Hash `json:"proof"`
	Checkpoint string      `json:"checkpoint"`
}

// Prove returns entry i with an inclusion proof against a fresh checkpoint.
func (l *Ledger) Prove(i int64) (*Inclusion, error) {
	signed, cp, err := l.signedCheckpoint()
	if err != nil {
		return nil, err
	}
	entry, err := l.Entry(i)
	if err != nil {
		return nil, err
	}
	p, err := l.InclusionProof(i, int64(cp.Size))
	if err != nil {
		return nil, err
	}
	return &Inclusion{Index: i, Entry: string(entry), Proof: p, Checkpoint: string(signed)}, nil
}

// Check verifies an Inclusion against the appliance's verifier key and
// returns the entry.
func (inc *Inclusion) Check(verifierKey string) (*Entry, error) {
	cp, err := VerifyCheckpoint([]byte(inc.Checkpoint), verifierKey)
	if err != nil {
		return nil, err
	}
	if err := VerifyInclusion(cp, inc.Index, []byte(inc.Entry), inc.Proof); err != nil {
		return nil, err
	}
	return ParseEntry([]byte(inc.Entry))
}
