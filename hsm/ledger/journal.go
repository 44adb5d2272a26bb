package ledger

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/custodian-project/custodian/hsm/durable"
)

// The journal is the ledger's durable truth; ledger.db is an index derived
// from it. Every ledger transaction is one journal record, appended and
// fdatasynced before the index commits (without syncs of its own), so a
// commit costs one sync. The transaction (wtx) records its changes rather
// than holding bbolt's write transaction, so the index's puts and commit
// run after the caller's next step (the TPM increment), not before it.
// Close syncs the index and appends a clean marker naming the record the
// index holds; at Open an index without that marker is rebuilt from the
// journal.
//
// A record on disk is
//
//	magic "CLJ1" | payload length (8 bytes, big-endian) | payload | SHA-256(magic, length, payload)
//
// and its payload is a kind byte, the record's sequence number (8 bytes;
// the first record is 1, each next one adds 1) and, for a transaction
// record, its operations in order: 'b' bucket (create a bucket), 'p' bucket
// key value (put), 'd' bucket key (delete), each field a uvarint length
// and its bytes. A clean marker's body is the sequence number of the
// transaction record the index holds, the chain of the records before it
// (chain = SHA-256(chain, a record's SHA-256), from 32 zero bytes) and an
// HMAC-SHA256 under the state key over both: an edit of the journal under
// the marker (its hashes recomputed, as anyone can) breaks the chain, and
// a marker made afresh lacks the key. A marker of 8 bytes (the held
// record alone, written before the chain) is not trusted: the index is
// rebuilt. While the ledger is open, and after a crash, the file may end
// in zeros after its last record (journalRoom).

// JournalName is the ledger's journal inside the data directory.
const JournalName = "ledger.journal"

const (
	journalMagic = "CLJ1"
	frameHeader  = len(journalMagic) + 8
	// maxRecord bounds a record's payload: the largest note (a package)
	// is well below it, and a damaged length cannot make Open allocate
	// more.
	maxRecord = 1 << 30

	kindTx    = 'T'
	kindClean = 'C'

	legacyMarker = 8                             // held
	keyedMarker  = 8 + sha256.Size + sha256.Size // held, chain, HMAC

	opBucket = 'b'
	opPut    = 'p'
	opDelete = 'd'
)

// metaJournalSeq is the sequence number of the journal record the index
// holds, written inside every transaction.
var metaJournalSeq = []byte("journal-seq")

// ErrJournalDamaged: a journal record before the last one is not what
// was written. Nothing after it can be trusted to be in order. A journal
// restored alone may be older than ledger.db, which may then hold the
// only copy of acknowledged entries: the message does not offer it.
var ErrJournalDamaged = fmt.Errorf("%w: the ledger journal (%s) is damaged before its end; keep a copy of the data directory, then restore the newest backup of the journal and ledger.db together, or follow \"A damaged journal\" in the operator guide", ErrBlocked, JournalName)

// op is one physical change a transaction made.
type op struct {
	code             byte
	bucket, key, val []byte
}

func (o op) size() int {
	n := 1 + field(o.bucket)
	if o.code != opBucket {
		n += field(o.key)
	}
	if o.code == opPut {
		n += field(o.val)
	}
	return n
}

func field(b []byte) int {
	return binary.PutUvarint(make([]byte, binary.MaxVarintLen64), uint64(len(b))) + len(b)
}

// record is one journal record, parsed.
type record struct {
	kind byte
	seq  uint64
	ops  []op   // kindTx
	held uint64 // kindClean: the transaction record the index holds

	// kindClean, keyed: the chain of the records before the marker and
	// the HMAC over held and chain.
	chain, mac []byte

	before [sha256.Size]byte // as read: the chain of the records before it
}

// parseRecord parses a record's payload. Its operations refer to payload.
func parseRecord(payload []byte) (record, error) {
	var r record
	if len(payload) < 9 {
		return r, errors.New("a record shorter than its header")
	}
	r.kind, r.seq = payload[0], binary.BigEndian.Uint64(payload[1:9])
	body := payload[9:]
	switch r.kind {
	case kindClean:
		if len(body) != legacyMarker && len(body) != keyedMarker {
			return r, errors.New("a clean marker of the wrong length")
		}
		r.held = binary.BigEndian.Uint64(body)
		if len(body) == keyedMarker {
			r.chain, r.mac = body[8:8+sha256.Size], body[8+sha256.Size:]
		}
		return r, nil
	case kindTx:
	default:
		return r, fmt.Errorf("a record of unknown kind %d", r.kind)
	}
	for len(body) > 0 {
		o := op{code: body[0]}
		body = body[1:]
		var err error
		fields := []*[]byte{&o.bucket}
		switch o.code {
		case opBucket:
		case opPut:
			fields = append(fields, &o.key, &o.val)
		case opDelete:
			fields = append(fields, &o.key)
		default:
			return r, fmt.Errorf("an operation of unknown kind %d", o.code)
		}
		for _, f := range fields {
			if *f, body, err = cutField(body); err != nil {
				return r, err
			}
		}
		if len(o.bucket) == 0 || (o.code != opBucket && len(o.key) == 0) {
			return r, errors.New("an operation without a bucket or key")
		}
		r.ops = append(r.ops, o)
	}
	return r, nil
}

func cutField(b []byte) (f, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errors.New("a field longer than its record")
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// payloadSize is the length of r's payload.
func (r record) payloadSize() int {
	size := 9
	if r.kind == kindClean {
		size += 8 + len(r.chain) + len(r.mac)
	}
	for _, o := range r.ops {
		size += o.size()
	}
	return size
}

// frameSize is the length of r's frame on disk.
func (r record) frameSize() int64 {
	return int64(frameHeader) + int64(r.payloadSize()) + sha256.Size
}

// writeRecord writes r's frame to w, streaming its operations' values so
// that a large note is not copied, and returns how many bytes it wrote and
// the frame's SHA-256. A frame of up to 64 KiB is one write.
func writeRecord(w io.Writer, r record) (n int64, sum [sha256.Size]byte, err error) {
	size := r.payloadSize()
	if size > maxRecord {
		return 0, sum, fmt.Errorf("a ledger transaction of %d bytes is larger than the journal takes (%d)", size, maxRecord)
	}
	bw := bufio.NewWriterSize(w, min(frameHeader+size+sha256.Size, 64<<10))
	h := sha256.New()
	hashed := io.MultiWriter(bw, h)
	head := make([]byte, 0, frameHeader+1+8+8) // then scratch for an op's kind and a length
	head = append(head, journalMagic...)
	head = binary.BigEndian.AppendUint64(head, uint64(size))
	head = append(head, r.kind)
	head = binary.BigEndian.AppendUint64(head, r.seq)
	if r.kind == kindClean {
		head = binary.BigEndian.AppendUint64(head, r.held)
	}
	hashed.Write(head)
	if r.kind == kindClean {
		hashed.Write(r.chain)
		hashed.Write(r.mac)
	}
	for _, o := range r.ops {
		writeOp(hashed, head[:0], o)
	}
	h.Sum(sum[:0])
	bw.Write(sum[:])
	if err := bw.Flush(); err != nil {
		return 0, sum, err
	}
	return int64(frameHeader + size + sha256.Size), sum, nil
}

// writeOp writes o's encoding to w, with scratch for its small fields.
func writeOp(w io.Writer, scratch []byte, o op) {
	scratch = append(scratch, o.code)
	scratch = binary.AppendUvarint(scratch, uint64(len(o.bucket)))
	w.Write(scratch)
	w.Write(o.bucket)
	if o.code == opBucket {
		return
	}
	w.Write(binary.AppendUvarint(scratch[:0], uint64(len(o.key))))
	w.Write(o.key)
	if o.code == opPut {
		w.Write(binary.AppendUvarint(scratch[:0], uint64(len(o.val))))
		w.Write(o.val)
	}
}

// chainNext is the chain after a record whose frame's SHA-256 is sum.
func chainNext(chain [sha256.Size]byte, sum []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write(chain[:])
	h.Write(sum)
	var next [sha256.Size]byte
	h.Sum(next[:0])
	return next
}

// markerMAC binds a clean marker to the state key: the record the index
// holds and the chain of every record before the marker.
func markerMAC(key []byte, held uint64, chain []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("custodian ledger journal clean marker\x00"))
	m.Write(binary.BigEndian.AppendUint64(nil, held))
	m.Write(chain)
	return m.Sum(nil)
}

// scanner reads a journal's records in order.
type scanner struct {
	f     io.ReaderAt
	end   int64 // the file's size
	off   int64 // where the next record starts
	buf   []byte
	last  uint64            // the previous record's sequence number
	chain [sha256.Size]byte // the chain of the records read
}

// errTorn: the journal ends in a record that was never finished (a crash
// during its write, before its sync and so before anything acknowledged
// it).
var errTorn = errors.New("torn journal tail")

// next returns the next record, io.EOF at the journal's end, errTorn for
// an unfinished last record, or an error wrapping ErrJournalDamaged. The
// record's operations are valid until the next call.
//
// A record that is not whole (short, zeros where its bytes never came, a
// hash that does not match) is the torn tail only when nothing shows it
// was synced (notTorn).
func (s *scanner) next() (record, error) {
	if s.off == s.end {
		return record{}, io.EOF
	}
	payload, total, bad := s.frame()
	if bad != "" {
		if why := s.notTorn(); why != "" {
			return record{}, fmt.Errorf("%w (record at byte %d: %s; %s)", ErrJournalDamaged, s.off, bad, why)
		}
		return record{}, errTorn
	}
	r, err := parseRecord(payload)
	if err == nil && r.seq != s.last+1 {
		err = fmt.Errorf("sequence number %d after %d", r.seq, s.last)
	}
	if err != nil {
		return record{}, fmt.Errorf("%w (record at byte %d: %v)", ErrJournalDamaged, s.off, err)
	}
	r.before = s.chain
	s.chain = chainNext(s.chain, payload[len(payload):len(payload)+sha256.Size])
	s.last = r.seq
	s.off += total
	return r, nil
}

// frame reads the record at s.off and checks its framing and hash. bad
// says what is wrong, or is empty.
func (s *scanner) frame() (payload []byte, total int64, bad string) {
	payload, total, bad = readFrame(io.NewSectionReader(s.f, s.off, s.end-s.off), s.buf)
	s.buf = payload[:0]
	return payload, total, bad
}

// readFrame reads one framed record from r into buf.
func readFrame(r *io.SectionReader, buf []byte) (payload []byte, total int64, bad string) {
	var head [frameHeader]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return buf[:0], 0, "shorter than a record's header"
	}
	if string(head[:len(journalMagic)]) != journalMagic {
		return buf[:0], 0, "no record starts there"
	}
	size := binary.BigEndian.Uint64(head[len(journalMagic):])
	if size > maxRecord || size+sha256.Size > uint64(r.Size()-int64(frameHeader)) {
		return buf[:0], 0, "its length runs past the journal's end"
	}
	if uint64(cap(buf)) < size+sha256.Size {
		buf = make([]byte, size+sha256.Size)
	}
	buf = buf[:size+sha256.Size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return buf[:0], 0, "it cannot be read: " + err.Error()
	}
	h := sha256.New()
	h.Write(head[:])
	h.Write(buf[:size])
	if !bytes.Equal(h.Sum(nil), buf[size:]) {
		return buf[:0], 0, "its SHA-256 does not match"
	}
	return buf[:size], int64(frameHeader) + int64(size) + sha256.Size, ""
}

// maxTailHeaders bounds the record headers (magic and a length that fits
// the file) looked at after a bad record. A torn write leaves at most the
// one record being written, whose bytes hold none in practice (notes are
// JSON, which never holds the raw NUL bytes of a length): more is
// damage, and the bound keeps the work linear in the file's size.
const maxTailHeaders = 64

// notTorn says why the bad record at s.off is damage rather than the torn
// tail of a crash, or returns "". A record is written only after the one
// before it was synced, so a torn record is the journal's last: one
// followed by another record's header at its declared end, or by a whole
// record anywhere, was synced and then damaged.
func (s *scanner) notTorn() string {
	if end, ok := s.declaredEnd(s.off); ok && end < s.end && s.headerAt(end) {
		return fmt.Sprintf("the record after it starts at byte %d, so it was written whole", end)
	}
	candidates, why := s.headersAfter()
	if why != "" {
		return why
	}
	var buf []byte
	for _, start := range candidates {
		var bad string
		if buf, _, bad = readFrame(io.NewSectionReader(s.f, start, s.end-start), buf); bad == "" {
			return fmt.Sprintf("a whole record follows it at byte %d", start)
		}
	}
	return ""
}

// headersAfter reads the file after s.off once and returns where record
// headers start whose record would end at the file's end or where another
// starts (a whole record ends so: only those are worth hashing), or why
// there are too many headers for a torn write, before hashing anything.
func (s *scanner) headersAfter() (candidates []int64, why string) {
	br := bufio.NewReaderSize(io.NewSectionReader(s.f, s.off+1, s.end-s.off-1), 64<<10)
	headers, matched := 0, 0
	for pos := s.off + 1; ; pos++ {
		c, err := br.ReadByte()
		if err != nil {
			return candidates, ""
		}
		if c != journalMagic[matched] {
			matched = 0
		}
		if c != journalMagic[matched] {
			continue
		}
		if matched++; matched < len(journalMagic) {
			continue
		}
		matched = 0
		start := pos - int64(len(journalMagic)) + 1
		length, _ := br.Peek(8)
		end, ok := frameEnd(start, length, s.end)
		if !ok {
			continue
		}
		if headers++; headers > maxTailHeaders {
			return nil, fmt.Sprintf("more than %d record headers follow it", maxTailHeaders)
		}
		if end == s.end || s.headerAt(end) {
			candidates = append(candidates, start)
		}
	}
}

// declaredEnd is where the record whose header is at off ends, if its
// header is whole and its length fits the file.
func (s *scanner) declaredEnd(off int64) (int64, bool) {
	var head [frameHeader]byte
	if _, err := s.f.ReadAt(head[:], off); err != nil || string(head[:len(journalMagic)]) != journalMagic {
		return 0, false
	}
	return frameEnd(off, head[len(journalMagic):], s.end)
}

// frameEnd is where a record starting at start with the 8 length bytes
// length ends, if that is within a file of size bytes.
func frameEnd(start int64, length []byte, size int64) (int64, bool) {
	if len(length) < 8 {
		return 0, false
	}
	n := binary.BigEndian.Uint64(length)
	if n > maxRecord || int64(n)+int64(frameHeader+sha256.Size) > size-start {
		return 0, false
	}
	return start + int64(frameHeader) + int64(n) + sha256.Size, true
}

// headerAt reports whether a record's magic starts at off (as much of it
// as the file holds).
func (s *scanner) headerAt(off int64) bool {
	b := make([]byte, min(int64(len(journalMagic)), s.end-off))
	if len(b) == 0 {
		return false
	}
	_, err := s.f.ReadAt(b, off)
	return err == nil && journalMagic[:len(b)] == string(b)
}

// journal is the open journal file of a ledger, locked for its life.
type journal struct {
	f *os.File

	// key is the state key that signs clean markers; without one (the
	// ledger blocks anyway) a marker is written and read unkeyed.
	key []byte

	mu     sync.Mutex        // guards the fields below; writes also hold bbolt's writer lock
	size   int64             // the length of its whole records
	room   int64             // the end of the zeros this process wrote after the records (≥ size; reserve)
	seq    uint64            // the newest record's sequence number
	held   uint64            // the newest transaction record's sequence number
	chain  [sha256.Size]byte // the chain of every record
	marked bool              // the newest record is a keyed clean marker for held
	clean  bool              // ... and it verifies (or there is no key to check it)
	source uint64            // the journal record a migrated ledger.db held, named in record 1 (0: none)
	edit   bool              // a marker that did not verify was seen in this process: none may be signed again
	broken error             // non-nil: nothing more may be appended
}

// openJournal opens (creating if create) and locks the journal at path,
// waiting up to 2 seconds for another process to let go of it.
func openJournal(path string, create bool) (*journal, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	// Never through a link planted at its name: scan cuts a torn tail,
	// which would truncate the link's target.
	f, err := durable.OpenRegular(path, flags)
	if err != nil {
		return nil, fmt.Errorf("opening the ledger journal: %w", err)
	}
	if err := lockFile(f, unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (%s stayed locked for 2 seconds)", ErrInUse, path)
	}
	return &journal{f: f}, nil
}

// lockFile takes a flock of kind how on f, trying for 2 seconds.
func lockFile(f *os.File, how int) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil || !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scan checks every record of the journal (framing, hash, sequence) and
// cuts a torn last record away, durably. each, when not nil, sees every
// transaction record in order.
func (j *journal) scan(each func(record) error) error {
	err := j.walk(each)
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case errors.Is(err, errTorn) && each == nil:
		return j.cut(j.size)
	case errors.Is(err, errTorn): // a second pass: the first one cut it
		return nil
	}
	return err
}

// walk reads every record in order, keeping the journal's size (of its
// whole records), newest sequence number, held record and clean state,
// and returns io.EOF at its end, errTorn before a torn tail, or what
// damaged it.
func (j *journal) walk(each func(record) error) error {
	info, err := j.f.Stat()
	if err != nil {
		return err
	}
	s := &scanner{f: j.f, end: info.Size()}
	j.seq, j.held, j.marked, j.clean = 0, 0, false, false
	for {
		r, err := s.next()
		if err != nil {
			j.size, j.chain, j.room = s.off, s.chain, s.off // no room: what follows is not zeros of ours
			return err
		}
		j.seq = r.seq
		j.marked = r.kind == kindClean && r.held == j.held && r.mac != nil
		j.clean = j.marked && j.markerHolds(r)
		j.edit = j.edit || (j.marked && !j.clean)
		if r.kind != kindTx {
			continue
		}
		j.held = r.seq
		if r.seq == 1 {
			j.source = migratedFrom(r)
		}
		if each != nil {
			if err := each(r); err != nil {
				return err
			}
		}
	}
}

// migratedFrom is the journal record held by the ledger.db that record 1
// migrated: it copies that ledger.db's meta bucket, journal-seq included,
// before the put that sets it to 1. 0 when r is no such migration.
func migratedFrom(r record) uint64 {
	for i, o := range r.ops {
		if o.code == opPut && bytes.Equal(o.bucket, bucketMeta) && bytes.Equal(o.key, metaJournalSeq) && len(o.val) == 8 && i < len(r.ops)-1 {
			return binary.BigEndian.Uint64(o.val)
		}
	}
	return 0
}

// markerHolds reports whether the clean marker r was written by this
// ledger over the records before it: its chain is theirs and its HMAC
// verifies under the state key. Without a key nothing can be checked, and
// the marker is taken as it is (the ledger blocks anyway).
func (j *journal) markerHolds(r record) bool {
	if len(j.key) == 0 {
		return true
	}
	return hmac.Equal(r.chain, r.before[:]) && hmac.Equal(r.mac, markerMAC(j.key, r.held, r.chain))
}

// edited reports whether the journal ended, when this process read it,
// with a keyed clean marker that does not hold: records under it were
// changed after it was written. It stays true after later appends, so
// that no later marker signs the edit.
func (j *journal) edited() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.edit || (j.marked && !j.clean)
}

// cut truncates the journal to size and syncs it.
func (j *journal) cut(size int64) error {
	if err := j.f.Truncate(size); err != nil {
		return err
	}
	j.room = size
	return unix.Fdatasync(int(j.f.Fd()))
}

// append writes r as the next record and syncs it: the one durable step
// of a ledger commit. On failure the journal is cut back to where it was;
// if even that fails it is broken, and nothing more is appended.
func (j *journal) append(r record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken != nil {
		return j.broken
	}
	r.seq = j.seq + 1
	if r.kind == kindClean && len(j.key) > 0 {
		r.chain = j.chain[:]
		r.mac = markerMAC(j.key, r.held, r.chain)
	}
	if r.kind == kindTx {
		j.reserve(r.frameSize())
	} else if err := j.trim(); err != nil { // a clean marker ends the file
		return fmt.Errorf("writing the ledger journal: %w", err)
	}
	n, sum, err := writeRecord(io.NewOffsetWriter(j.f, j.size), r)
	if err == nil {
		err = syncJournal(j.f)
	}
	if err != nil {
		if cutErr := j.cut(j.size); cutErr != nil {
			j.broken = fmt.Errorf("%w: writing the ledger journal failed (%v) and it could not be cut back (%v); restart custodian to recover it", ErrBlocked, err, cutErr)
		}
		return fmt.Errorf("writing the ledger journal: %w", err)
	}
	j.size, j.seq = j.size+n, r.seq
	j.room = max(j.room, j.size)
	j.chain = chainNext(j.chain, sum[:])
	j.marked = r.kind == kindClean && r.mac != nil
	j.clean = r.kind == kindClean
	if r.kind == kindTx {
		j.held = r.seq
	}
	return nil
}

// journalRoom is how far the journal is kept ahead of its records by
// zeros, written and synced once per that many bytes of records: a
// record's fdatasync then writes only its own blocks, since the file's
// size does not change and ext4 needs no commit of its inode (10 to 20
// µs less per append on a virtual disk, where the device's cache flush
// is most of a sync: BenchmarkAppend). A crash leaves the zeros after the last
// record, which Open cuts as it cuts a torn tail; they are cut before a
// clean marker is written, so that a journal at rest ends with its last
// record, as every reader of the format expects.
const journalRoom = 1 << 20

// roomMargin is the free space a reservation leaves on the partition:
// below it, ledger.db's commits need the space more than the journal's
// syncs need room.
const roomMargin = 4 << 20

// reserve makes sure the need bytes after the records are zeros the file
// already holds. On a partition with less than roomMargin free after
// them, or when writing them fails, the file is left as it was and the
// record is written past its end, as without room.
func (j *journal) reserve(need int64) {
	if j.size+need < j.room {
		return
	}
	from, to := max(j.room, j.size), j.size+need+journalRoom
	var fs unix.Statfs_t
	if unix.Fstatfs(int(j.f.Fd()), &fs) != nil || int64(fs.Bavail)*int64(fs.Bsize) < to-from+roomMargin {
		return
	}
	if err := writeZeros(j.f, from, to); err != nil || unix.Fdatasync(int(j.f.Fd())) != nil {
		j.f.Truncate(from)
		return
	}
	j.room = to
}

// trim cuts the zeros after the records away, durably.
func (j *journal) trim() error {
	if j.room <= j.size {
		return nil
	}
	return j.cut(j.size)
}

// writeZeros writes zeros into f from byte from to byte to.
func writeZeros(f *os.File, from, to int64) error {
	zeros := make([]byte, min(to-from, 64<<10))
	for off := from; off < to; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros[:min(int64(len(zeros)), to-off)], off); err != nil {
			return err
		}
	}
	return nil
}

// beforeIndexCommit, when set, runs between the journal's sync and the
// index's commit: a test kills the process there.
var beforeIndexCommit func()

// syncJournal makes the journal's new record durable. A variable so that
// a deliberate break can leave it out.
var syncJournal = func(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// nextSeq is the sequence number the next record gets.
func (j *journal) nextSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq + 1
}

// block makes the journal refuse every further append with err.
func (j *journal) block(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.broken == nil {
		j.broken = err
	}
}

func (j *journal) err() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.broken
}

// errIndexBehind: a transaction is durable in the journal but its index
// commit failed. It stands; the next Open rebuilds the index.
var errIndexBehind = fmt.Errorf("%w: the change is in the ledger journal but ledger.db could not be updated; restart custodian to rebuild ledger.db from the journal", ErrBlocked)

// update runs fn in one ledger transaction: its operations become one
// journal record, appended and synced; then ledger.db commits in the
// background (indexing). If fn or the journal's write fails, nothing was
// written. If the index's commit fails, the transaction stands and the
// journal refuses every further one (Blocked says why) until the next
// Open rebuilds the index.
func (l *Ledger) update(fn func(*wtx) error) error {
	startIndexCommit, err := l.commit(fn)
	if err == nil {
		startIndexCommit()
	}
	return err
}

// commit is update that returns once the transaction is durable (its
// journal record synced), leaving ledger.db's commit to the caller: it
// must call startIndexCommit, once, before anything else uses the ledger
// (a transaction that needed the whole bbolt transaction holds bbolt's
// writer lock until then).
func (l *Ledger) commit(fn func(*wtx) error) (startIndexCommit func(), err error) {
	if err := l.indexing.wait(); err != nil {
		return nil, err
	}
	if err := l.j.err(); err != nil {
		return nil, err
	}
	w, err := beginTx(l.db)
	if err != nil {
		return nil, err
	}
	defer func() {
		if startIndexCommit == nil { // an error, or a panic in fn: bbolt's transactions must still end
			w.rollback()
		}
	}()
	if err := fn(w); err != nil {
		return nil, err
	}
	if err := w.put(bucketMeta, metaJournalSeq, u64(l.j.nextSeq())); err != nil {
		return nil, err
	}
	w.endRead()
	if err := l.j.append(record{kind: kindTx, ops: w.ops}); err != nil {
		return nil, err
	}
	if beforeIndexCommit != nil {
		beforeIndexCommit()
	}
	return func() {
		l.indexing.start(func() error {
			if err := w.commitIndex(); err != nil {
				err = l.indexFailure(err)
				l.j.block(err)
				return err
			}
			return nil
		})
	}, nil
}

// indexFailure is why the ledger blocks after ledger.db failed to commit
// a transaction the journal holds.
func (l *Ledger) indexFailure(err error) error {
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w: the change is in the ledger journal but ledger.db could not be updated: %s", ErrBlocked, fullAdvice(l.dir))
	}
	return fmt.Errorf("%w (%v)", errIndexBehind, err)
}

// indexing is ledger.db's commit of the newest transaction, which runs
// once the journal holds it (and an entry's TPM count is done) while the
// caller goes on: a release unseals meanwhile. Whatever reads or writes
// ledger.db waits for it first (Ledger.view, Ledger.commit, Blocked), so
// nothing acknowledged is ever missing from a read: after a commit that
// failed, every read and write is refused with its error, never answered
// from the index without it.
type indexing struct {
	mu   sync.Mutex
	done chan struct{} // closed when the newest commit has finished; nil before the first
	err  error         // why a commit failed: the index is behind the journal until the next Open
}

// start runs commit in the background. Transactions are serialized (each
// waits for the one before), so at most one commit runs at a time.
func (ix *indexing) start(commit func() error) {
	done := make(chan struct{})
	ix.mu.Lock()
	ix.done = done
	ix.mu.Unlock()
	go func() {
		defer close(done)
		if err := commit(); err != nil {
			ix.mu.Lock()
			ix.err = cmp.Or(ix.err, err)
			ix.mu.Unlock()
		}
	}()
}

// wait returns once the newest commit has finished, with why a commit
// failed, if one did.
func (ix *indexing) wait() error {
	ix.mu.Lock()
	done := ix.done
	ix.mu.Unlock()
	if done != nil {
		<-done
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.err
}

// view runs fn in a read transaction of ledger.db, after its newest
// commit.
func (l *Ledger) view(fn func(*bolt.Tx) error) error {
	if err := l.indexing.wait(); err != nil {
		return err
	}
	return l.db.View(fn)
}
