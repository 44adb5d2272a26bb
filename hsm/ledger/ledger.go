package ledger

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Counter is the monotonic counter the ledger is anchored to: on the
// appliance, a TPM NV counter ([TPMCounter]).
type Counter interface {
	// Read returns the value, or an error wrapping tpm.ErrNoCounter.
	Read() (uint64, error)
	// Create defines the counter and returns its first value.
	Create() (uint64, error)
	// Increment adds one and returns the new value.
	Increment() (uint64, error)
	// IncrementChecked adds one and returns the value read back from the
	// counter, so that a counter moved by anyone else (a copy of the data
	// directory open beside this one) shows at this append, not at the
	// next open. Appends that spend a replay key use it.
	IncrementChecked() (uint64, error)
}

// Config is what a ledger needs besides its directory.
type Config struct {
	// Origin names the log in its checkpoints, e.g. "custodian/court-a".
	Origin string
	// Device identifies the TPM the ledger belongs to (its EK Name). A
	// ledger opened against another device is blocked.
	Device []byte
	// Counter anchors the ledger against rollback.
	Counter Counter
	// Signer signs checkpoints. Its name must be the Origin.
	Signer note.Signer
	// StateKey authenticates the ledger's state and the bound directories
	// (StateKeySize bytes, from [SigningKey.Open]). Without it the state
	// cannot be checked: the ledger opens blocked with
	// ErrStateUnauthenticated, for reading and proving only.
	StateKey []byte
	// KeyErr says why StateKey is missing. One that blocks (wraps
	// ErrBlocked, such as ErrForeignLedgerKey) is the ledger's block
	// reason in place of ErrStateUnauthenticated.
	KeyErr error
	// Bound are the directories whose contents the state binds; they
	// change only through [Ledger.Change].
	Bound []BoundDir
	// DeviceErr, when not nil, says the TPM is not the device the data
	// directory was enrolled for (the appliance compares the enrolled EK
	// with the TPM's). The ledger then opens blocked with it, checks
	// nothing against the TPM, and cannot be resolved.
	DeviceErr error
}

// Errors a caller acts on. Everything that blocks releases wraps
// ErrBlocked.
var (
	ErrBlocked      = errors.New("ledger blocked")
	ErrRolledBack   = fmt.Errorf("%w: the data directory is older than the TPM counter (restored from a copy?)", ErrBlocked)
	ErrCounterAhead = fmt.Errorf("%w: the ledger is ahead of the TPM counter (copied to another TPM, or the TPM was cleared?)", ErrBlocked)
	ErrOtherDevice  = fmt.Errorf("%w: the ledger belongs to another TPM", ErrBlocked)
	ErrReplay       = errors.New("warrant already used")
	ErrClockBehind  = errors.New("the clock is behind the newest ledger entry")
	ErrNoLedger     = errors.New("no ledger in the data directory")
	// ErrUncounted: the entry was committed, and the append returns its
	// index with this error, but the TPM counter was not incremented after
	// it (refused, a bus error, or moved by someone else). The entry
	// stands (the next Open finishes the increment or blocks), so the
	// caller accounts for it as appended; the ledger blocks until then.
	// (A ledger.db commit that fails after the journal's sync blocks the
	// ledger too, from the next call on: Blocked says why.)
	ErrUncounted     = errors.New("the entry is stored but the TPM counter was not incremented after it; restart custodian to finish the increment")
	ErrLedgerExists  = errors.New("a ledger already exists in the data directory")
	errNotResolvable = errors.New("the ledger is not blocked; nothing to resolve")
)

// FileName is the ledger's index inside the data directory: a bbolt
// database derived from the journal ([JournalName]), which is rebuilt
// from it when it is missing or was not closed cleanly.
const FileName = "ledger.db"

var (
	bucketMeta    = []byte("meta")
	bucketEntries = []byte("entries")
	bucketHashes  = []byte("hashes")
	bucketSalts   = []byte("salts")
	bucketReplay  = []byte("replay")

	metaSize    = []byte("size")
	metaCounter = []byte("counter")
	metaLast    = []byte("last-time")
	metaFloor   = []byte("replay-floor")
	metaOrigin  = []byte("origin")
	metaDevice  = []byte("device")
)

// Ledger is an open ledger. Its methods are safe for concurrent use.
type Ledger struct {
	cfg Config
	db  *bolt.DB // the index: derived from the journal, written without syncs
	j   *journal // the durable truth, locked for the ledger's life
	dir string

	indexing indexing // ledger.db's commit of the newest transaction

	mu      sync.Mutex
	blocked error // non-nil: releases and appends are refused
	state   state
}

// state is the ledger's metadata, kept in memory and in the meta bucket,
// where an HMAC under Config.StateKey binds it.
type state struct {
	size    int64
	counter uint64 // the counter value the newest entry consumed
	last    time.Time
	floor   time.Time
	root    tlog.Hash     // the tree hash of size entries
	replay  [32]byte      // the replay index's digest (replayDigest)
	salts   [32]byte      // the salts' digest (saltDigest)
	notes   [32]byte      // the bound notes' digest (boundNotesDigest), zero for none
	bound   []boundDigest // each bound directory's digest, in Config.Bound order
	pending string        // the bound directory a Change is under way in, or ""
}

// Create makes a new ledger in dir with an init entry. It refuses if one
// exists: a missing ledger is never silently recreated, since that would
// forget every warrant already used.
func Create(dir string, cfg Config, now time.Time) (*Ledger, error) {
	if exists, err := Exists(dir); err != nil || exists {
		if err == nil {
			err = ErrLedgerExists
		}
		return nil, err
	}
	l, err := createFiles(dir, cfg)
	if err != nil {
		return nil, err
	}
	counter, err := startCounter(cfg.Counter)
	if err != nil {
		l.abandon()
		return nil, err
	}
	now = now.UTC().Truncate(time.Second)
	err = l.update(func(tx *wtx) error {
		for _, b := range [][]byte{bucketMeta, bucketEntries, bucketHashes, bucketSalts, bucketReplay} {
			if err := tx.createBucket(b); err != nil {
				return err
			}
		}
		l.state = state{counter: counter, floor: now}
		if err := tx.put(bucketMeta, metaOrigin, []byte(cfg.Origin)); err != nil {
			return err
		}
		if err := tx.put(bucketMeta, metaDevice, cfg.Device); err != nil {
			return err
		}
		full, err := tx.full() // bindCurrent reads the buckets just made
		if err != nil {
			return err
		}
		if err := l.bindCurrent(full, &l.state); err != nil {
			return err
		}
		return l.putState(tx, &l.state)
	})
	if err != nil {
		l.abandon()
		return nil, err
	}
	if _, err := l.Append(Entry{Time: now, Kind: KindInit, Outcome: OutcomeOK}, nil, nil); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// startCounter returns the TPM counter's value, defining it if needed.
func startCounter(c Counter) (uint64, error) {
	v, err := c.Read()
	if err == nil {
		return v, nil
	}
	if !isNoCounter(err) {
		return 0, err
	}
	return c.Create()
}

// Open opens the ledger in dir and checks it against the TPM. A blocked
// ledger opens (so it can be read, proved and resolved) but refuses
// appends; Blocked says why.
func Open(dir string, cfg Config) (*Ledger, error) {
	l, err := openFiles(dir, cfg)
	if err != nil {
		return nil, err
	}
	if err := l.view(func(tx *bolt.Tx) error { return l.load(tx) }); err != nil {
		l.Close()
		return nil, err
	}
	if l.blocked == nil {
		l.blocked = keptIndexes(dir)
	}
	l.blocked = l.check()
	return l, nil
}

// check runs at Open: the state's binding first, so that nothing a forged
// state says (such as a counter one ahead) reaches the TPM, then the
// counter.
func (l *Ledger) check() error {
	if l.cfg.DeviceErr != nil {
		if errors.Is(l.cfg.DeviceErr, ErrBlocked) {
			return l.cfg.DeviceErr
		}
		return fmt.Errorf("%w: %w", ErrBlocked, l.cfg.DeviceErr)
	}
	if l.blocked != nil {
		return l.blocked
	}
	if err := l.checkState(); err != nil {
		if !errors.Is(err, ErrBlocked) { // an I/O error: still nothing is trusted
			err = fmt.Errorf("%w: checking the data directory: %v", ErrBlocked, err)
		}
		return err
	}
	return l.reconcile()
}

// openDB opens the index. It is written without syncs: the journal,
// synced first, is what makes a commit durable.
func openDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoSync: true, NoGrowSync: true})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%w (%s stayed locked for 2 seconds)", ErrInUse, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening ledger %s: %w", path, err)
	}
	return db, nil
}

func (l *Ledger) load(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return fmt.Errorf("%w: the database has no ledger", ErrNoLedger)
	}
	for _, name := range [][]byte{bucketEntries, bucketHashes, bucketSalts, bucketReplay} {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("the ledger database is damaged (no %s bucket); restore its newest copy", name)
		}
	}
	if got := string(meta.Get(metaOrigin)); got != l.cfg.Origin {
		return fmt.Errorf("the ledger's origin is %q, not %q", got, l.cfg.Origin)
	}
	if !equal(meta.Get(metaDevice), l.cfg.Device) {
		l.blocked = ErrOtherDevice
	}
	if err := l.state.load(meta); err != nil {
		return err
	}
	return l.state.loadBound(meta, l.cfg.Bound)
}

// reconcile compares the ledger's counter with the TPM's. The ledger one
// ahead means a crash came between an entry's commit and the counter's
// increment: the increment is finished now.
func (l *Ledger) reconcile() error {
	tpmValue, err := l.cfg.Counter.Read()
	if err != nil {
		if isNoCounter(err) {
			return fmt.Errorf("%w: %v", ErrCounterAhead, err)
		}
		return fmt.Errorf("%w: reading the TPM counter: %v", ErrBlocked, err)
	}
	switch {
	case l.state.counter == tpmValue:
		return nil
	case l.state.counter == tpmValue+1:
		if _, err := l.cfg.Counter.Increment(); err != nil {
			return fmt.Errorf("%w: finishing an interrupted counter increment: %v", ErrBlocked, err)
		}
		return nil
	case l.state.counter < tpmValue:
		return fmt.Errorf("%w (ledger at %d, TPM at %d)", ErrRolledBack, l.state.counter, tpmValue)
	default:
		return fmt.Errorf("%w (ledger at %d, TPM at %d)", ErrCounterAhead, l.state.counter, tpmValue)
	}
}

// Blocked returns why the ledger refuses appends, or nil. It first waits
// for ledger.db's commit of the newest transaction, which may yet fail.
func (l *Ledger) Blocked() error {
	indexErr := l.indexing.wait() // the newest commit of ledger.db may yet fail
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked == nil {
		return cmp.Or(indexErr, l.j.err()) // a commit found the index or the journal failing
	}
	return l.blocked
}

// Size is the number of entries.
func (l *Ledger) Size() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.size
}

// ReplayFloor is the time before which no warrant may be used: when the
// ledger was created or a rollback was last resolved. Warrants used in a
// lost stretch of the ledger cannot be known, so none older is trusted.
func (l *Ledger) ReplayFloor() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.floor
}

// Newest is the newest entry's time (zero for an empty ledger), from the
// state Open checked against the entries and the TPM: never from an
// entry read back alone.
func (l *Ledger) Newest() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state.last
}

// CheckClock refuses a clock that is behind the newest entry.
func (l *Ledger) CheckClock(now time.Time) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.checkClock(now)
}

func (l *Ledger) checkClock(now time.Time) error { return checkClock(now, l.state.last) }

func checkClock(now, newest time.Time) error {
	if now.Truncate(time.Second).Before(newest) {
		return fmt.Errorf("%w: now %s, newest entry %s", ErrClockBehind,
			now.UTC().Format(time.RFC3339), newest.Format(time.RFC3339))
	}
	return nil
}

// Append records e. When subject is not nil the entry commits to it
// under a fresh salt kept locally. When replayKey is not nil it is
// registered, and an append with a key already registered is refused
// with ErrReplay. The entry's Counter is set by the ledger. Append returns
// the entry's index once it is durable and counted; an entry durable but
// not counted returns its index with an error wrapping ErrUncounted.
func (l *Ledger) Append(e Entry, subject, replayKey []byte) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked != nil {
		return 0, l.blocked
	}
	return l.appendFrom(l.state, e, subject, replayKey)
}

// saltSize is the size of a commitment's salt.
const saltSize = 32

// appendFrom appends e on top of base, which is l.state or l.state with a
// bound directory's new digest.
func (l *Ledger) appendFrom(base state, e Entry, subject, replayKey []byte) (int64, error) {
	return l.appendWith(base, e, replayKey, func(*wtx, *state) ([]byte, error) { return subject, nil })
}

// appendWith appends e on top of base in one transaction with prepare,
// which may change base inside that transaction and returns what e
// commits to (nil: nothing). If any step before the commit fails, nothing
// is written; if only the count after it fails, the entry's index comes
// with ErrUncounted.
func (l *Ledger) appendWith(base state, e Entry, replayKey []byte, prepare func(*wtx, *state) ([]byte, error)) (int64, error) {
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return 0, err
	}
	var next state
	startIndexCommit, err := l.commit(func(tx *wtx) error {
		subject, err := prepare(tx, &base)
		if err != nil {
			return err
		}
		if err := checkClock(e.Time, base.last); err != nil {
			return err
		}
		e.Counter = base.counter + 1
		if subject != nil {
			e.Commitment = Commit(salt, subject)
		}
		data, err := e.Marshal()
		if err != nil {
			return err
		}
		next = base.clone()
		next.size++
		next.counter = e.Counter
		next.last = e.Time
		return l.writeEntry(tx, base.size, data, salt, replayKey, &next)
	})
	if err != nil {
		return 0, err
	}
	// Durable: the TPM counts it, then ledger.db commits (not beside the
	// count: on swtpm the two shared the CPU), even if counting panics,
	// since bbolt's writer lock goes with the commit.
	l.state = next
	err = func() error {
		defer startIndexCommit()
		return l.countEntry(next.counter, replayKey != nil)
	}()
	if err != nil {
		return next.size - 1, fmt.Errorf("%w (entry %d): %w", ErrUncounted, next.size-1, err)
	}
	return next.size - 1, nil
}

// countEntry increments the TPM counter after an entry is durable. If it
// fails, the entry stays (it was committed) and the ledger blocks until
// reopened, when reconcile finishes the increment. An entry that spends a
// replay key reads the counter back (checked), so that two copies of one
// data directory open at once cannot both spend the same warrant.
func (l *Ledger) countEntry(want uint64, checked bool) error {
	increment := l.cfg.Counter.Increment
	if checked {
		increment = l.cfg.Counter.IncrementChecked
	}
	got, err := increment()
	if err != nil {
		l.blocked = fmt.Errorf("%w: incrementing the TPM counter failed, restart to finish it: %v", ErrBlocked, err)
		return l.blocked
	}
	if got != want {
		l.blocked = fmt.Errorf("%w: the TPM counter moved outside the ledger (now %d, want %d)", ErrCounterAhead, got, want)
		return l.blocked
	}
	return nil
}

// writeEntry stores entry n and everything that depends on it in tx,
// and binds next (the state after it).
func (l *Ledger) writeEntry(tx *wtx, n int64, data, salt, replayKey []byte, next *state) error {
	if replayKey != nil {
		if tx.get(bucketReplay, replayKey) != nil {
			return ErrReplay
		}
		if err := tx.put(bucketReplay, replayKey, u64(uint64(n))); err != nil {
			return err
		}
		next.replay = extendReplay(next.replay, uint64(n), replayKey)
	}
	hashes, err := tlog.StoredHashes(n, data, tx)
	if err != nil {
		return err
	}
	first := tlog.StoredHashIndex(0, n)
	for i, h := range hashes {
		if err := tx.put(bucketHashes, u64(uint64(first+int64(i))), h[:]); err != nil {
			return err
		}
	}
	if err := tx.put(bucketEntries, u64(uint64(n)), data); err != nil {
		return err
	}
	if err := tx.put(bucketSalts, u64(uint64(n)), salt); err != nil {
		return err
	}
	next.salts = extendSalts(next.salts, uint64(n), salt)
	if next.root, err = tlog.TreeHash(next.size, tx); err != nil {
		return err
	}
	return l.putState(tx, next)
}

// Seen reports whether replayKey was used, and by which entry.
func (l *Ledger) Seen(replayKey []byte) (index int64, seen bool, err error) {
	err = l.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketReplay).Get(replayKey); v != nil {
			index, seen = int64(binary.BigEndian.Uint64(v)), true
		}
		return nil
	})
	return index, seen, err
}

// Entry returns entry i's encoded bytes.
func (l *Ledger) Entry(i int64) ([]byte, error) {
	return l.get(bucketEntries, i)
}

// Salt returns the salt of entry i's commitment, for a court that needs to
// prove which subject an entry was about.
func (l *Ledger) Salt(i int64) ([]byte, error) {
	return l.get(bucketSalts, i)
}

func (l *Ledger) get(bucket []byte, i int64) ([]byte, error) {
	var out []byte
	err := l.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucket).Get(u64(uint64(i)))
		if v == nil {
			return fmt.Errorf("no ledger entry %d", i)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// ResolveRollback is the operator's answer to a blocked ledger: it accepts
// the data directory as it is (its ledger, replay index and bound
// directories), binds it to this TPM again and appends a resolve entry
// that commits to the state it accepted (counter set to the TPM's), all in
// one transaction: it is done entirely or not at all. The replay floor
// rises to now, so no warrant signed before it can be used again. It
// refuses a clock behind the newest entry (the floor never moves back), a
// ledger or enrollment of another TPM (set the device up afresh), and
// records this TPM's approved image did not write (ErrRecordsEdited: the
// stored state's HMAC fails, or the entries, hashes, salts or replay index
// are not the ones it records). So what it accepts is a copy the device
// wrote: an older counter (a rollback), restored bound directories, or an
// interrupted change; never an edited history.
// It needs the ledger key, so only the approved image on this TPM can
// resolve.
func (l *Ledger) ResolveRollback(now time.Time) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.blocked == nil {
		return 0, errNotResolvable
	}
	if errors.Is(l.blocked, ErrRecordsEdited) {
		// Found edited at Open (the journal under its clean marker):
		// that, not a ledger.db kept aside because of it, is the reason.
		return 0, l.blocked
	}
	if err := keptIndexes(l.dir); err != nil {
		return 0, fmt.Errorf("%w; this cannot be resolved", err)
	}
	if l.cfg.DeviceErr != nil {
		return 0, fmt.Errorf("%w; this cannot be resolved", l.blocked)
	}
	if len(l.cfg.StateKey) != StateKeySize {
		if errors.Is(l.cfg.KeyErr, ErrForeignLedgerKey) {
			return 0, fmt.Errorf("%w; resolving cannot accept another key", l.cfg.KeyErr)
		}
		return 0, fmt.Errorf("%w; boot the approved image to resolve", ErrStateUnauthenticated)
	}
	reason := "rollback"
	if errors.Is(l.blocked, ErrStateMismatch) || errors.Is(l.blocked, ErrChangeInterrupted) {
		reason = "state"
	}
	tpmValue, err := startCounter(l.cfg.Counter)
	if err != nil {
		return 0, err
	}
	now = now.UTC().Truncate(time.Second)
	e := Entry{Time: now, Kind: KindResolve, Outcome: OutcomeOK, Reason: reason}
	index, err := l.appendWith(l.state.clone(), e, nil, func(tx *wtx, s *state) ([]byte, error) {
		if !equal(tx.get(bucketMeta, metaDevice), l.cfg.Device) {
			return nil, fmt.Errorf("%w; it cannot be adopted: set this device up afresh (custodian enroll, then custodian ledger init in an empty data directory)", ErrOtherDevice)
		}
		full, err := tx.full() // the checks Open runs, on the same bbolt transaction
		if err != nil {
			return nil, err
		}
		edited, err := l.recordMismatches(full)
		if err != nil {
			return nil, err
		}
		if len(edited) > 0 {
			return nil, edited
		}
		if err := l.bindCurrent(full, s); err != nil {
			return nil, err
		}
		if err := checkClock(now, s.last); err != nil {
			return nil, fmt.Errorf("%w; set the clock (the RTC) to the right time, then resolve", err)
		}
		s.counter = tpmValue
		s.floor = now // not before the newest entry: checked above
		return l.encodeState(s), nil
	})
	if err != nil {
		return 0, err
	}
	l.blocked = nil
	return index, nil
}

func (s *state) store(tx *wtx) error {
	for k, v := range map[string][]byte{
		string(metaSize):    u64(uint64(s.size)),
		string(metaCounter): u64(s.counter),
		string(metaLast):    u64(uint64(s.last.Unix())),
		string(metaFloor):   u64(uint64(s.floor.Unix())),
	} {
		if err := tx.put(bucketMeta, []byte(k), v); err != nil {
			return err
		}
	}
	return s.storeBound(tx)
}

func (s *state) load(meta *bolt.Bucket) error {
	var vals [4]uint64
	for i, k := range [][]byte{metaSize, metaCounter, metaLast, metaFloor} {
		v := meta.Get(k)
		if len(v) != 8 {
			return fmt.Errorf("ledger metadata %q is damaged", k)
		}
		vals[i] = binary.BigEndian.Uint64(v)
	}
	s.size, s.counter = int64(vals[0]), vals[1]
	s.last, s.floor = time.Unix(int64(vals[2]), 0).UTC(), time.Unix(int64(vals[3]), 0).UTC()
	if vals[2] == 0 {
		s.last = time.Time{}
	}
	return nil
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// txHashReader reads stored Merkle hashes inside a read transaction.
type txHashReader struct{ tx *bolt.Tx }

func (r txHashReader) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	return readHashes(indexes, r.tx.Bucket(bucketHashes).Get)
}

// readHashes reads the stored Merkle hashes at indexes with get.
func readHashes(indexes []int64, get func(key []byte) []byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		v := get(u64(uint64(idx)))
		if len(v) != tlog.HashSize {
			return nil, fmt.Errorf("ledger hash %d is missing", idx)
		}
		copy(out[i][:], v)
	}
	return out, nil
}

// ErrInUse means another process (the daemon, or a command such as
// custodian ledger verify) has the ledger open.
var ErrInUse = errors.New("the ledger is open in another custodian process (custodian serve, or a command such as custodian ledger verify)")

// ErrUnreadable means a ledger file is there but is not a ledger that can
// be read: damaged, truncated, or another kind of file.
var ErrUnreadable = errors.New("the ledger file is damaged or is not a ledger")

// Recorded is what a ledger read without the TPM says of a replay key.
type Recorded struct {
	Index int64     // the entry that recorded the key, when Seen
	Seen  bool      // the replay index holds the key
	Floor time.Time // the replay floor: warrants signed before it are refused
}

// SeenIn reports whether the ledger in dir recorded replayKey, and by
// which entry, with the replay floor read in the same transaction,
// reading ledger.db without the TPM, and only when the journal ends by
// saying ledger.db was closed cleanly ([ErrIndexUnclean] otherwise). It is for telling a person that a
// warrant was used; it trusts the file as it is (a copy restored from
// before a release reads as unused), so only an opened ledger decides a
// release. ErrNoLedger: dir has none; ErrInUse: a process holds it;
// ErrUnreadable: the file is not a ledger; an fs error otherwise (such as
// fs.ErrPermission).
func SeenIn(dir string, replayKey []byte) (Recorded, error) {
	var r Recorded
	path := filepath.Join(dir, FileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if exists, _ := Exists(dir); exists { // the journal alone
			return r, ErrIndexUnclean
		}
		return r, fmt.Errorf("%w (%s)", ErrNoLedger, path)
	}
	held, release, err := lockCleanJournal(dir)
	if err != nil {
		return r, err
	}
	defer release()
	var db *bolt.DB
	err = guarded(func() (err error) {
		db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		return err
	})
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return r, ErrInUse
	case errors.Is(err, ErrUnreadable):
		return r, err
	case errors.Is(err, fs.ErrPermission):
		return r, err // this user may not read it: not a damaged ledger
	case err != nil:
		return r, fmt.Errorf("%w (%s)", ErrUnreadable, path)
	}
	defer guarded(db.Close)
	err = guarded(func() error {
		if got, err := indexHeld(db); held != 0 && (err != nil || got != held) {
			return ErrIndexUnclean
		}
		return db.View(func(tx *bolt.Tx) error {
			b, meta := tx.Bucket(bucketReplay), tx.Bucket(bucketMeta)
			if b == nil || meta == nil {
				return fmt.Errorf("%w (%s: no replay index)", ErrUnreadable, path)
			}
			var s state
			if err := s.load(meta); err != nil {
				return fmt.Errorf("%w (%s: %w)", ErrUnreadable, path, err)
			}
			r.Floor = s.floor
			if v := b.Get(replayKey); len(v) == 8 {
				r.Index, r.Seen = int64(binary.BigEndian.Uint64(v)), true
			}
			return nil
		})
	})
	return r, err
}
