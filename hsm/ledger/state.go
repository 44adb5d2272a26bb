package ledger

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/durable"
)

// The state binding. Counting entries against the TPM catches a data
// directory restored from an older copy, but not one padded offline with
// made-up entries until its counter matches, nor a trust store or bundle
// restored on its own. So everything the appliance trusts at start-up is
// bound by an HMAC under a key that only this TPM releases on the approved
// image (derived from the sealed checkpoint key's seed): the origin, the
// device, the ledger's size, tree root and counter, its newest time and
// replay floor, a digest of the replay index, and a digest of each bound
// directory. The HMAC is rewritten in the same ledger transaction as every
// append and checked at Open; it costs no TPM command.

// Errors of the state binding. Each blocks releases (wraps ErrBlocked).
var (
	ErrStateMismatch        = fmt.Errorf("%w: the data directory is not the state this TPM recorded (restored from a copy, or edited?)", ErrBlocked)
	ErrChangeInterrupted    = fmt.Errorf("%w: a change to the data directory was interrupted after it was written and before it was logged", ErrBlocked)
	ErrStateUnauthenticated = fmt.Errorf("%w: the ledger key does not unseal (not the approved image), so the data directory cannot be checked", ErrBlocked)
)

// StateKeySize is the size of Config.StateKey.
const StateKeySize = 32

// stateKeyLabel separates the state key from the checkpoint key it is
// derived from.
const stateKeyLabel = "custodian state v1"

// deriveStateKey derives the state key from the checkpoint key's seed.
func deriveStateKey(seed []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, seed, nil, stateKeyLabel, StateKeySize)
}

// BoundDir is a directory whose whole contents the state binds.
type BoundDir struct {
	Name string // a short name, kept in the ledger ("trust", "bundles")
	Path string
}

// boundDigest is a bound directory's recorded digest.
type boundDigest struct {
	name   string
	digest [sha256.Size]byte
}

var (
	metaRoot    = []byte("root")
	metaReplay  = []byte("replay-digest")
	metaSalts   = []byte("salt-digest")
	metaPending = []byte("pending-change")
	metaMAC     = []byte("state-mac")
	metaNotes   = []byte("notes-digest")
	boundPrefix = "bound/"
)

// stateEncoding heads the canonical encoding of the state. v2 added the
// salts' digest; v3 the bound notes' digest, used once a note is bound,
// so that a ledger that never bound one keeps its v2 HMAC. (A release
// daemon binds one for the ledger's life at its first start: from then on
// the state is v3, which an older version cannot check; updates only move
// forward, behind the version floor.)
const (
	stateEncoding      = "custodian state v2\n"
	stateEncodingNotes = "custodian state v3\n"
)

// encodeState is the canonical encoding the HMAC covers.
func (l *Ledger) encodeState(s *state) []byte {
	var b cryptobyte.Builder
	if s.notes == ([sha256.Size]byte{}) {
		b.AddBytes([]byte(stateEncoding))
	} else {
		b.AddBytes([]byte(stateEncodingNotes))
	}
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(l.cfg.Origin)) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(l.cfg.Device) })
	b.AddUint64(uint64(s.size))
	b.AddBytes(s.root[:])
	b.AddUint64(s.counter)
	b.AddUint64(uint64(unixOrZero(s.last)))
	b.AddUint64(uint64(unixOrZero(s.floor)))
	b.AddBytes(s.replay[:])
	b.AddBytes(s.salts[:])
	b.AddUint8(uint8(len(s.bound)))
	for _, d := range s.bound {
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(d.name)) })
		b.AddBytes(d.digest[:])
	}
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s.pending)) })
	if s.notes != ([sha256.Size]byte{}) {
		b.AddBytes(s.notes[:])
	}
	return b.BytesOrPanic()
}

func unixOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func (l *Ledger) stateMAC(s *state) []byte {
	m := hmac.New(sha256.New, l.cfg.StateKey)
	m.Write(l.encodeState(s))
	return m.Sum(nil)
}

// ErrRecordsEdited blocks a ledger whose own records are not what this
// TPM's approved image wrote: the HMAC over the stored state fails, or the
// entries, Merkle hashes, salts or replay index are not the ones the state
// records. A copy the device wrote (an older one: a rollback) carries a
// valid HMAC over records that match it; only an edit makes them differ,
// so resolve-rollback never accepts this.
var ErrRecordsEdited = fmt.Errorf("%w: the ledger's own records were edited: restore %s and %s from a copy the device wrote; resolve cannot accept them", ErrStateMismatch, JournalName, FileName)

// mismatch is one part of the data directory that is not the recorded
// state: what, and which error it is (ErrRecordsEdited, ErrStateMismatch
// or ErrChangeInterrupted).
type mismatch struct {
	kind   error
	detail string
}

func (m *mismatch) Error() string { return m.kind.Error() + ": " + m.detail }
func (m *mismatch) Unwrap() error { return m.kind }

func recordsEdited(format string, args ...any) error {
	return &mismatch{kind: ErrRecordsEdited, detail: fmt.Sprintf(format, args...)}
}

// mismatches is every part that differs, so that the operator sees at once
// all that a resolve would accept (or why it cannot). It is each part's
// error: the first in full, the others by their detail.
type mismatches []*mismatch

func (ms mismatches) Error() string {
	var b strings.Builder
	b.WriteString(ms[0].Error())
	for _, m := range ms[1:] {
		if !errors.Is(ms[0].kind, m.kind) { // say what else it is
			fmt.Fprintf(&b, "; %s", strings.TrimPrefix(m.kind.Error(), ErrBlocked.Error()+": "))
		}
		fmt.Fprintf(&b, "; %s", m.detail)
	}
	return b.String()
}

func (ms mismatches) Unwrap() []error {
	errs := make([]error, len(ms))
	for i, m := range ms {
		errs[i] = m
	}
	return errs
}

// checkState verifies the state's HMAC, the records it stands for (the
// tree, the newest time, the salts and the replay index) and each bound
// directory, and reports every part that differs. A change that was
// interrupted before anything changed on disk is closed here, if nothing
// else differs.
func (l *Ledger) checkState() error {
	if len(l.cfg.StateKey) != StateKeySize {
		if errors.Is(l.cfg.KeyErr, ErrBlocked) {
			return l.cfg.KeyErr
		}
		return ErrStateUnauthenticated
	}
	var found mismatches
	err := l.view(func(tx *bolt.Tx) error {
		var err error
		found, err = l.recordMismatches(tx)
		return err
	})
	if err != nil {
		return err
	}
	if !slices.EqualFunc(l.state.bound, l.cfg.Bound, func(d boundDigest, b BoundDir) bool { return d.name == b.Name }) {
		found = append(found, &mismatch{ErrStateMismatch, "the ledger binds other directories than this appliance has"})
		return found
	}
	trusted, closing := len(found) == 0, -1
	for i, d := range l.cfg.Bound {
		m, err := l.checkDir(d, l.state.bound[i].digest, trusted)
		switch {
		case err != nil:
			return err
		case m != nil:
			found = append(found, m)
		case l.state.pending == d.Name:
			closing = i
		}
	}
	if len(found) > 0 {
		return found
	}
	if closing >= 0 {
		// Interrupted before anything was written: nothing changed and
		// nothing was logged. Close the change.
		next := l.state.clone()
		next.pending = ""
		return l.storeState(next)
	}
	return nil
}

// recordMismatches checks that the stored state is the one this TPM's
// approved image wrote (its HMAC) and recomputes, from the records
// themselves, everything the state says about them: the whole tree from
// the entries' bytes (every stored hash included), the newest entry's
// time, and the digests of the salts and of the replay index. An entry,
// salt or hash edited offline is a mismatch, however little of the tree an
// append would read. Every mismatch found is ErrRecordsEdited.
func (l *Ledger) recordMismatches(tx *bolt.Tx) (mismatches, error) {
	var found mismatches
	mac := tx.Bucket(bucketMeta).Get(metaMAC)
	switch {
	case len(mac) == 0:
		found = append(found, &mismatch{ErrRecordsEdited, "the ledger's state was never bound to this TPM"})
	case !hmac.Equal(mac, l.stateMAC(&l.state)):
		found = append(found, &mismatch{ErrRecordsEdited, "the ledger's records (size, tree, counter, times or bound digests) were not written by this TPM's approved image"})
	}
	got := state{size: l.state.size}
	if err := recomputeRecords(tx, &got); err != nil {
		var m *mismatch
		if !errors.As(err, &m) {
			return nil, err
		}
		return append(found, m), nil
	}
	for _, c := range []struct {
		differs bool
		detail  string
	}{
		{got.size != l.state.size || got.root != l.state.root, "the ledger's entries are not the recorded tree"},
		{!got.last.Equal(l.state.last), "the newest entry's time is not the recorded one"},
		{got.salts != l.state.salts, "the commitments' salts are not the recorded ones"},
		{got.replay != l.state.replay, "the replay index is not the recorded one (keys removed or added)"},
		{got.notes != l.state.notes, "the bound notes (requests in flight) are not the recorded ones"},
	} {
		if c.differs {
			found = append(found, &mismatch{ErrRecordsEdited, c.detail})
		}
	}
	return found, nil
}

// recomputeRecords sets s's size, root, newest time and the digests of the
// salts, the replay index and the bound notes from the buckets (s.size is only a hint). The entries must be dense
// from 0; each entry's Merkle hashes are computed from its bytes and must
// be the stored ones, and no other hash may be stored.
func recomputeRecords(tx *bolt.Tx, s *state) error {
	var err error
	if s.size, s.root, s.last, err = recomputeTree(tx, s.size); err != nil {
		return err
	}
	if s.salts, err = saltDigest(tx, s.size); err != nil {
		return err
	}
	if s.replay, err = replayDigest(tx); err != nil {
		return err
	}
	if err := checkBoundNotes(tx); err != nil {
		return err
	}
	s.notes, err = boundNotesDigest(tx)
	return err
}

func recomputeTree(tx *bolt.Tx, sizeHint int64) (size int64, root tlog.Hash, last time.Time, err error) {
	damaged := recordsEdited
	hashes := make(memHashes, 0, max(0, min(2*sizeHint, 1<<24)))
	var newest []byte
	c := tx.Bucket(bucketEntries).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if !bytes.Equal(k, u64(uint64(size))) {
			return 0, root, last, damaged("the ledger's entries are not numbered 0 to n-1 (entry %d)", size)
		}
		hs, err := tlog.StoredHashes(size, v, hashes)
		if err != nil {
			return 0, root, last, err
		}
		hashes = append(hashes, hs...)
		newest = v
		size++
	}
	i := 0
	c = tx.Bucket(bucketHashes).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if i >= len(hashes) || !bytes.Equal(k, u64(uint64(i))) || !bytes.Equal(v, hashes[i][:]) {
			return 0, root, last, damaged("Merkle hash %d is not the hash of the entries", i)
		}
		i++
	}
	if i != len(hashes) {
		return 0, root, last, damaged("the ledger stores %d Merkle hashes, its entries make %d", i, len(hashes))
	}
	if root, err = tlog.TreeHash(size, hashes); err != nil {
		return 0, root, last, err
	}
	if newest != nil {
		e, err := ParseEntry(newest)
		if err != nil {
			return 0, root, last, damaged("the newest entry: %v", err)
		}
		last = e.Time
	}
	return size, root, last, nil
}

// The salt digest chains every entry's salt in entry order:
// SHA-256(previous || index || salt). Appends extend it; Open recomputes
// it from the bucket, which must hold exactly one salt per entry.
func extendSalts(prev [sha256.Size]byte, index uint64, salt []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(u64(index))
	h.Write(salt)
	return [sha256.Size]byte(h.Sum(nil))
}

func saltDigest(tx *bolt.Tx, size int64) ([sha256.Size]byte, error) {
	var d [sha256.Size]byte
	var n int64
	c := tx.Bucket(bucketSalts).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if !bytes.Equal(k, u64(uint64(n))) || len(v) != saltSize {
			return d, recordsEdited("salt %d is damaged or out of place", n)
		}
		d = extendSalts(d, uint64(n), v)
		n++
	}
	if n != size {
		return d, recordsEdited("%d salts for %d entries", n, size)
	}
	return d, nil
}

// checkDir compares d with its recorded digest. A change recorded as under
// way in it (trusted only when the records are the device's) first loses
// the temporary files a crash left.
func (l *Ledger) checkDir(d BoundDir, want [sha256.Size]byte, trusted bool) (*mismatch, error) {
	pending := trusted && l.state.pending == d.Name
	if pending {
		if err := removeTemps(d.Path); err != nil {
			return nil, err
		}
	}
	got, err := DigestDir(d.Path)
	switch {
	case err != nil:
		return &mismatch{ErrStateMismatch, err.Error()}, nil
	case got != want && pending:
		return &mismatch{ErrChangeInterrupted, fmt.Sprintf("%s/ changed: check it, then accept it with custodian ledger resolve-rollback", d.Name)}, nil
	case got != want:
		return &mismatch{ErrStateMismatch, fmt.Sprintf("%s/ is not the recorded one", d.Name)}, nil
	}
	return nil, nil
}

// storeState writes s with its HMAC in its own transaction.
func (l *Ledger) storeState(s state) error {
	err := l.update(func(tx *wtx) error { return l.putState(tx, &s) })
	if err == nil {
		l.state = s
	}
	return err
}

// putState stores s and its HMAC in the meta bucket.
func (l *Ledger) putState(tx *wtx, s *state) error {
	if err := s.store(tx); err != nil {
		return err
	}
	if len(l.cfg.StateKey) != StateKeySize {
		return ErrStateUnauthenticated
	}
	return tx.put(bucketMeta, metaMAC, l.stateMAC(s))
}

// Change runs apply, which changes the bound directory named name, and
// records e (with subject, as Append does) binding the directory's new
// digest. Before apply, the change is marked pending in the ledger, so a
// crash in between is never taken for tampering: at the next Open, a
// directory left as it was closes the change, and one that changed blocks
// with ErrChangeInterrupted until an operator checks and accepts it. If
// apply fails and changed nothing, nothing is logged; if it failed after
// changing the directory, a failure entry binds what is there.
func (l *Ledger) Change(name string, e Entry, subject []byte, apply func() error) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked != nil {
		return 0, l.blocked
	}
	i := slices.IndexFunc(l.cfg.Bound, func(d BoundDir) bool { return d.Name == name })
	if i < 0 {
		return 0, fmt.Errorf("%q is not a bound directory", name)
	}
	if err := l.checkClock(e.Time); err != nil {
		return 0, err
	}
	marked := l.state.clone()
	marked.pending = name
	if err := l.storeState(marked); err != nil {
		return 0, err
	}
	applyErr := apply()
	digest, err := DigestDir(l.cfg.Bound[i].Path)
	if err != nil {
		l.blocked = fmt.Errorf("%w (%s/): %v", ErrChangeInterrupted, name, err)
		return 0, l.blocked
	}
	next := l.state.clone()
	next.pending = ""
	next.bound[i].digest = digest
	if applyErr != nil {
		if digest == l.state.bound[i].digest {
			if err := l.storeState(next); err != nil {
				return 0, err
			}
			return 0, applyErr
		}
		e = Entry{Time: e.Time, Kind: KindFailure, Outcome: OutcomeRefused, Reason: "change-failed", KeyID: e.KeyID}
	}
	index, err := l.appendFrom(next, e, subject, nil)
	if err != nil {
		l.blocked = fmt.Errorf("%w (%s/): logging it failed: %v", ErrChangeInterrupted, name, err)
		return 0, l.blocked
	}
	if applyErr != nil {
		return index, fmt.Errorf("%w (logged as a failure in entry %d)", applyErr, index)
	}
	return index, nil
}

// bindCurrent recomputes everything the state binds from what is on disk,
// for a new ledger and for an operator accepting a blocked one. The
// entries must still be their Merkle tree (ErrRecordsEdited otherwise).
func (l *Ledger) bindCurrent(tx *bolt.Tx, s *state) error {
	if err := recomputeRecords(tx, s); err != nil {
		return err
	}
	s.pending = ""
	s.bound = s.bound[:0:0]
	for _, d := range l.cfg.Bound {
		if err := removeTemps(d.Path); err != nil {
			return err
		}
		digest, err := DigestDir(d.Path)
		if err != nil {
			return err
		}
		s.bound = append(s.bound, boundDigest{name: d.Name, digest: digest})
	}
	return nil
}

// The replay digest chains the replay index's (entry index, key) pairs in
// entry order: SHA-256(previous || index || SHA-256(key)). Appends extend
// it; Open recomputes it from the bucket.
func extendReplay(prev [sha256.Size]byte, index uint64, key []byte) [sha256.Size]byte {
	return chainReplay(prev, index, sha256.Sum256(key))
}

func chainReplay(prev [sha256.Size]byte, index uint64, keyHash [sha256.Size]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(prev[:])
	h.Write(u64(index))
	h.Write(keyHash[:])
	return [sha256.Size]byte(h.Sum(nil))
}

func replayDigest(tx *bolt.Tx) ([sha256.Size]byte, error) {
	type used struct {
		index uint64
		key   [sha256.Size]byte
	}
	var all []used
	err := tx.Bucket(bucketReplay).ForEach(func(k, v []byte) error {
		if len(v) != 8 {
			return recordsEdited("replay index entry is damaged")
		}
		all = append(all, used{binary.BigEndian.Uint64(v), sha256.Sum256(k)})
		return nil
	})
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	slices.SortFunc(all, func(a, b used) int {
		if a.index != b.index {
			return cmpU64(a.index, b.index)
		}
		return slices.Compare(a.key[:], b.key[:])
	})
	var d [sha256.Size]byte
	for _, u := range all {
		d = chainReplay(d, u.index, u.key)
	}
	return d, nil
}

func cmpU64(a, b uint64) int {
	if a < b {
		return -1
	}
	return 1
}

// DigestDir is SHA-256 over a directory tree: every entry's relative
// name, in lexical order, with each regular file's SHA-256. A missing
// directory digests as an empty one. Anything but directories and regular
// files (a symlink, a device) is refused: the appliance writes neither.
func DigestDir(root string) ([sha256.Size]byte, error) {
	// WalkDir does not follow a symlinked root: it would digest as empty
	// while the readers follow it.
	if info, err := os.Lstat(root); err == nil && !info.IsDir() {
		return [sha256.Size]byte{}, fmt.Errorf("%s is %s, not a directory; remove it", root, durable.FileKind(info.Mode()))
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte("custodian directory v1\n"))
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == root {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		kind, sum, err := digestEntry(path, e)
		if err != nil {
			return err
		}
		b.AddUint8(kind)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(filepath.ToSlash(rel))) })
		b.AddBytes(sum[:])
		return nil
	})
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	data, err := b.Bytes()
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(data), nil
}

func digestEntry(path string, e fs.DirEntry) (uint8, [sha256.Size]byte, error) {
	switch {
	case e.IsDir():
		return 'd', [sha256.Size]byte{}, nil
	case e.Type().IsRegular():
		data, err := os.ReadFile(path)
		return 'f', sha256.Sum256(data), err
	}
	return 0, [sha256.Size]byte{}, fmt.Errorf("%s is %s, not a regular file; remove it", path, durable.FileKind(e.Type()))
}

// removeTemps removes the temporary files a crash during durable.WriteFile
// leaves in a bound directory; it runs only for a change the ledger
// recorded as under way, or when an operator accepts the directory.
func removeTemps(root string) error {
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == root {
			return filepath.SkipDir
		}
		if err != nil {
			return err
		}
		if e.Type().IsRegular() && durable.IsTemp(e.Name()) {
			return os.Remove(path)
		}
		return nil
	})
	return err
}

// storeBound and loadBound keep the bound digests and the pending change
// in meta.
func (s *state) storeBound(tx *wtx) error {
	for _, d := range s.bound {
		if err := tx.put(bucketMeta, []byte(boundPrefix+d.name), d.digest[:]); err != nil {
			return err
		}
	}
	for k, v := range map[string][]byte{string(metaRoot): s.root[:], string(metaReplay): s.replay[:], string(metaSalts): s.salts[:],
		string(metaPending): []byte(s.pending), string(metaNotes): s.notes[:]} {
		if err := tx.put(bucketMeta, []byte(k), v); err != nil {
			return err
		}
	}
	return nil
}

func (s *state) loadBound(meta *bolt.Bucket, dirs []BoundDir) error {
	s.bound = nil
	for _, d := range dirs {
		v := meta.Get([]byte(boundPrefix + d.Name))
		if v == nil {
			continue // reported by checkState: the names differ
		}
		if len(v) != sha256.Size {
			return fmt.Errorf("ledger metadata %q is damaged", boundPrefix+d.Name)
		}
		s.bound = append(s.bound, boundDigest{name: d.Name, digest: [sha256.Size]byte(v)})
	}
	if v := meta.Get(metaRoot); len(v) == sha256.Size {
		s.root = [sha256.Size]byte(v)
	}
	if v := meta.Get(metaReplay); len(v) == sha256.Size {
		s.replay = [sha256.Size]byte(v)
	}
	if v := meta.Get(metaSalts); len(v) == sha256.Size {
		s.salts = [sha256.Size]byte(v)
	}
	if v := meta.Get(metaNotes); len(v) == sha256.Size {
		s.notes = [sha256.Size]byte(v)
	}
	s.pending = string(meta.Get(metaPending))
	return nil
}

func (s state) clone() state {
	s.bound = slices.Clone(s.bound)
	return s
}
