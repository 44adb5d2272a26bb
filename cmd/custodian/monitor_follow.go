package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/ledger"
)

// monitorState is what the monitor keeps of one appliance: the newest
// checkpoint it verified, and the alarm it raised, if any. The root hash
// is all a later poll needs: the consistency proof to a newer tree is
// computed from that tree's tiles (checked against its signed root) and
// checked against this one.
type monitorState struct {
	Origin      string        `json:"origin"`
	VerifierKey string        `json:"verifier_key"`
	Checkpoint  string        `json:"checkpoint"` // signed; "" before the first poll
	Alarm       *monitorAlarm `json:"alarm"`      // a split view proven; nil if none
	// ReportedTo is the index below which the checkpoint's entries were
	// reported; nil when all were. A first poll or a long one reports in
	// batches, each saved here, so the next poll resumes and repeats none.
	ReportedTo *int64 `json:"reported_to,omitempty"`
}

// maxStateSize caps a state file: a checkpoint, a key, an alarm.
const maxStateSize = 64 << 10

// parseMonitorState reads a state file strictly, and checks that its
// checkpoint is the pinned key's: a state file edited by hand to another
// log's is refused, not followed.
func parseMonitorState(data []byte, key string) (*monitorState, *log.Checkpoint, error) {
	if len(data) > maxStateSize {
		return nil, nil, fmt.Errorf("%d bytes, more than a state file holds", len(data))
	}
	var st monitorState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || dec.More() || (st.Alarm != nil && st.Alarm.finding() == 0) {
		return nil, nil, errors.New("not a state file this monitor wrote")
	}
	if st.VerifierKey != key {
		return nil, nil, fmt.Errorf("it follows the log of key %s, not the --verifier-key given", st.VerifierKey)
	}
	if st.Checkpoint == "" {
		if st.ReportedTo != nil {
			return nil, nil, errors.New("not a state file this monitor wrote")
		}
		return &st, nil, nil
	}
	cp, err := ledger.VerifyCheckpoint([]byte(st.Checkpoint), key)
	if err != nil {
		return nil, nil, fmt.Errorf("its checkpoint: %w", err)
	}
	if r := st.ReportedTo; cp.Size > maxTreeSize || (r != nil && (*r < 0 || uint64(*r) >= cp.Size)) {
		return nil, nil, errors.New("not a state file this monitor wrote")
	}
	return &st, cp, nil
}

// follower follows one appliance's log.
type follower struct {
	g      *globals
	url    string // as --appliance gave it, for messages
	c      *apiClient
	prefix string // the log's path on the server
	key    string // the pinned verifier key
	dir    string // the state directory
	name   string // the appliance's files in dir are name.*
	st     monitorState
	seen   *log.Checkpoint // st.Checkpoint parsed; nil before the first poll
	next   *nextCheckpoint // this poll's checkpoint, until it is kept
	out    *entryLog
	mu     *sync.Mutex // the report's turn, shared by the followers of a run
	// witnesses, when --escrow names them, are asked whether each served
	// checkpoint extends what they cosigned.
	witnesses *witnessCheck
}

// loadFollower reads the state of the log key signs, if the monitor has
// followed it before.
func loadFollower(g *globals, dir, raw, key string, c *apiClient, prefix string, out *entryLog, mu *sync.Mutex) (*follower, error) {
	origin, _, _ := strings.Cut(key, "+")
	f := &follower{g: g, url: raw, c: c, prefix: prefix, key: key, dir: dir, name: fileName(origin), out: out, mu: mu,
		st: monitorState{Origin: origin, VerifierKey: key}}
	data, err := os.ReadFile(f.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, err
	}
	st, cp, err := parseMonitorState(data, key)
	if err != nil {
		return nil, withHint(fmt.Errorf("the monitor's state %s: %w", f.statePath(), err),
			"give the --verifier-key this state was made with; a state of another key belongs to another log")
	}
	f.st, f.seen = *st, cp
	return f, nil
}

// fileName makes an origin safe as a file name: custodian/court-a becomes
// custodian_court-a.
func fileName(origin string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, origin)
}

func (f *follower) statePath() string { return filepath.Join(f.dir, f.name+".json") }

func (f *follower) save() error {
	data, err := json.MarshalIndent(f.st, "", "  ")
	if err != nil {
		return err
	}
	return durable.WriteFile(f.statePath(), append(data, '\n'), 0o600)
}

// pollPatiently polls, and while the appliance does not answer tries again
// up to retries times, waiting 1 s, 2 s, 4 s... between tries.
func (f *follower) pollPatiently(ctx context.Context, retries int) error {
	wait := time.Second
	for attempt := 0; ; attempt++ {
		err := f.poll(ctx)
		var a *monitorAlarm
		if !errors.As(err, &a) || a.Kind != findingNames[findUnreachable] || attempt >= retries {
			return err
		}
		f.mu.Lock()
		fmt.Fprintf(f.g.stderr, "custodian: warning: %s did not answer (%s); trying again in %s\n", f.url, a.Message, wait)
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (f *follower) alarm(kind finding, format string, args ...any) *monitorAlarm {
	return &monitorAlarm{Kind: findingNames[kind], Origin: f.st.Origin, Message: fmt.Sprintf(format, args...)}
}

// maxTreeSize bounds the tree size a checkpoint may claim: more than any
// ledger holds (a TPM counter step per entry), and far from where sizes
// stop being int64.
const maxTreeSize = 1 << 48

// poll fetches the served checkpoint, verifies it, proves it consistent
// with the one seen before, keeps it, and then reports the entries not
// reported yet, in batches each checked against it before it is printed.
func (f *follower) poll(ctx context.Context) error {
	if f.st.Alarm != nil {
		return f.st.Alarm // proven: the log is not one history, until --clear-alarm
	}
	signed, err := fetchCapped(ctx, f.c, f.prefix+"checkpoint", ledger.MaxCheckpointSize)
	if err != nil {
		return f.alarm(findUnreachable, "fetching %scheckpoint: %v", f.prefix, err)
	}
	if _, err := note.Open(signed, note.VerifierList()); !isUnverifiedNote(err) {
		return f.alarm(findUnreachable, "%s serves something that is not a signed checkpoint at %scheckpoint (a web page, an error page?)", f.url, f.prefix)
	}
	cp, err := f.verify(signed)
	if err != nil {
		return f.alarm(findBadSignature, "the checkpoint %s serves does not verify with the pinned key: %v", f.url, err)
	}
	if cp.Size > maxTreeSize {
		return f.pending(signed, f.alarm(findBadTiles, "%s serves a signed tree of %d entries, more than any ledger holds", f.url, cp.Size))
	}
	old := f.seen
	switch {
	case old != nil && cp.Size < old.Size:
		return f.alarm(findStale, "%s serves a signed tree of %d entries, smaller than the one of %d seen before: a stale copy (a cache, a mirror, a replay) or a rollback; the newer checkpoint is kept and followed",
			f.url, cp.Size, old.Size)
	case old != nil && cp.Size == old.Size && !bytes.Equal(cp.Hash, old.Hash):
		return f.proven(findSplitView, signed, "two signed trees of %d entries with different root hashes", cp.Size)
	case old != nil && cp.Size == old.Size && f.st.ReportedTo == nil:
		f.say("%s: %d entries, none new\n", f.st.Origin, cp.Size)
		return nil
	}
	src := newRemoteTiles(ctx, f.c, f.prefix, signed, cp)
	if old != nil && cp.Size > old.Size {
		err := ledger.CheckExtends(old, cp, func(o, n int64) (tlog.TreeProof, error) { return tlog.ProveTree(n, o, src.hashes) })
		if errors.Is(err, ledger.ErrTwoHistories) {
			return f.proven(findSplitView, signed, "%v", err)
		}
		if err != nil {
			return f.pending(signed, f.tileAlarm(src.failed, errors.New("its hash tiles are not the tree its checkpoint signs")))
		}
	}
	if err := f.checkWitnesses(ctx, signed, cp, src); err != nil {
		return err
	}
	from := f.reportedTo()
	f.next = &nextCheckpoint{signed: signed, cp: cp}
	if old != nil { // proven consistent: kept now, so that a failed bundle costs no progress
		if err := f.keepNext(from); err != nil {
			return err
		}
	}
	to := min(int64(cp.Size), from&^(1<<ledger.TileHeight-1)+maxPollEntries)
	n, err := f.readEntries(src, from, to)
	if err != nil {
		return err
	}
	if err := f.keepNext(to); err != nil { // an empty tree, or the first poll's when it had no entry to report
		return err
	}
	more := ""
	if to < int64(cp.Size) {
		more = fmt.Sprintf(" (%d more at the next poll)", int64(cp.Size)-to)
	}
	f.say("%s: %d entries, %d new%s, consistent with every checkpoint seen before\n", f.st.Origin, cp.Size, n, more)
	return nil
}

// maxPollEntries caps the entries one poll reads (a multiple of a
// bundle's 256): a huge tree is read over several polls, each resuming
// where the last stopped, and a signed tree of 2^40 cheap entries cannot
// hold one poll for days.
const maxPollEntries = 1 << 18

// nextCheckpoint is a served checkpoint that verified, kept as the one
// followed once it is checked against the tree: at once when it is
// proven consistent with the one seen, else with the first batch of
// entries it proves.
type nextCheckpoint struct {
	signed []byte
	cp     *log.Checkpoint
}

// keepNext keeps the checkpoint of this poll, if not yet, with its entries
// below reported already.
func (f *follower) keepNext(reported int64) error {
	if f.next == nil {
		return nil
	}
	f.st.Checkpoint, f.seen = string(f.next.signed), f.next.cp
	f.next = nil
	f.setReported(reported)
	return f.save()
}

// say prints one line of the report; followers polled at once take turns.
func (f *follower) say(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.g.printf(format, args...)
}

// isUnverifiedNote reports whether err is note.Open's answer for a
// well-formed signed note with no key given: anything else the server
// sent is not a checkpoint at all, which says nothing about its signer.
func isUnverifiedNote(err error) bool {
	var u *note.UnverifiedNoteError
	return errors.As(err, &u)
}

// reportedTo is the first index not reported yet.
func (f *follower) reportedTo() int64 {
	if f.st.ReportedTo != nil {
		return *f.st.ReportedTo
	}
	return f.size()
}

func (f *follower) setReported(to int64) {
	f.st.ReportedTo = nil
	if to < f.size() {
		f.st.ReportedTo = &to
	}
}

// verify checks a served checkpoint: signed by the pinned key, for its
// origin. The cosignatures it may carry are the appliance's to show; the
// witnesses themselves are asked (checkWitnesses).
func (f *follower) verify(signed []byte) (*log.Checkpoint, error) {
	return ledger.VerifyCheckpoint(signed, f.key)
}

func (f *follower) size() int64 {
	if f.seen == nil {
		return 0
	}
	return int64(f.seen.Size)
}

// tileAlarm says why reading tiles failed. A request that failed on the
// way, or that the server asked to repeat later, says nothing about the
// log; anything else after a signed checkpoint is the server's doing: a
// tile it withholds (404), one larger than a tile can be, or tiles that
// are not the signed tree.
func (f *follower) tileAlarm(failed, err error) *monitorAlarm {
	cause := cmp.Or(failed, err)
	var fe *fetchError
	var hs *httpStatus
	switch {
	case errors.As(cause, &hs) && hs.code >= 400 && hs.code < 500 && hs.code != http.StatusTooManyRequests:
		return f.alarm(findBadTiles, "%s withholds tiles of the tree its checkpoint signs: %v", f.url, cause)
	case errors.As(cause, &fe):
		return f.alarm(findUnreachable, "fetching tiles: %v", cause)
	}
	return f.alarm(findBadTiles, "%s: %v", f.url, cause)
}

// pending keeps a signed checkpoint the monitor could not prove
// consistent (its tiles failed, or its size is impossible) as evidence
// beside the state, once per checkpoint, and returns a.
func (f *follower) pending(signed []byte, a *monitorAlarm) error {
	sum := sha256.Sum256(signed)
	path := filepath.Join(f.dir, fmt.Sprintf("%s.pending.%x.checkpoint", f.name, sum[:8]))
	if err := durable.CreateFile(path, signed, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		a.Message += fmt.Sprintf(" (its signed checkpoint could not be kept: %v)", err)
		return a
	}
	a.Evidence = []string{path}
	return a
}

// proven keeps the served checkpoint beside the one seen before (two
// signed checkpoints that cannot be one history are the proof to
// publish), records the alarm, and returns it. If the evidence or the
// state cannot be written, the alarm is still returned, saying so.
func (f *follower) proven(kind finding, served []byte, format string, args ...any) error {
	a := f.alarm(kind, format, args...)
	stamp := time.Now().UTC().Format("20060102T150405Z")
	base := filepath.Join(f.dir, fmt.Sprintf("%s.%s.%s", f.name, strings.ReplaceAll(a.Kind, " ", "-"), stamp))
	for _, suffix := range []string{".seen.checkpoint", ".served.checkpoint"} {
		data := served
		if suffix == ".seen.checkpoint" {
			if f.st.Checkpoint == "" {
				continue // a first poll refused by the witnesses: only what was served
			}
			data = []byte(f.st.Checkpoint)
		}
		if err := durable.CreateFile(base+suffix, data, 0o600); err != nil {
			a.Message += fmt.Sprintf(" (the evidence could not be kept: %v)", err)
			return a
		}
		a.Evidence = append(a.Evidence, base+suffix)
	}
	f.st.Alarm = a
	if err := f.save(); err != nil {
		a.Message += fmt.Sprintf(" (the alarm could not be recorded in the state: %v)", err)
	}
	return a
}

// reportBatch is how many bundles' entries are reported, appended and
// saved as reported at once.
const reportBatch = 16

// readEntries reads entries from..size-1 from the entry bundles, each
// checked against the signed tree's leaf hashes, and reports them a
// batch at a time: printed, appended and fsynced to --entries, and only
// then saved as reported. A failed bundle reports nothing of its batch.
func (f *follower) readEntries(src *remoteTiles, from, size int64) (int64, error) {
	var n int64
	var batch []listed
	bundles := 0
	for first := from &^ (1<<ledger.TileHeight - 1); first < size; first += 1 << ledger.TileHeight {
		t := tlog.Tile{H: ledger.TileHeight, L: -1, N: first >> ledger.TileHeight, W: int(min(size-first, 1<<ledger.TileHeight))}
		data, err := src.Tile(t)
		if err != nil {
			return n, f.tileAlarm(nil, err)
		}
		entries, err := ledger.SplitBundle(data, t.W)
		if err != nil {
			return n, f.tileAlarm(nil, err)
		}
		for i, raw := range entries {
			index := first + int64(i)
			if index < from {
				continue
			}
			e, err := ledger.ParseEntry(raw)
			if err != nil {
				return n, f.alarm(findBadTiles, "entry %d is in the signed tree but is not a ledger entry: %v", index, err)
			}
			batch = append(batch, describe(ledger.RangeEntry{Index: index, Entry: string(raw)}, e))
		}
		if bundles++; bundles%reportBatch == 0 || first+int64(t.W) >= size {
			if err := f.report(batch, first+int64(t.W)); err != nil {
				return n, err
			}
			n += int64(len(batch))
			batch = batch[:0]
		}
	}
	return n, nil
}

// report prints checked entries, appends them to the entry log (whole
// lines, fsynced), and then saves that entries below to are reported: a
// crash in between repeats a batch at the next poll, never loses one.
func (f *follower) report(batch []listed, to int64) error {
	f.mu.Lock()
	for _, l := range batch {
		f.g.printf("%s %s\n", f.st.Origin, l.line())
	}
	err := f.out.add(f.st.Origin, batch)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if f.next != nil {
		return f.keepNext(to)
	}
	f.setReported(to)
	return f.save()
}

// entryLog is --entries: new entries as JSON lines, appended and fsynced
// a batch at a time, before the state says they are reported; (origin,
// index) names each for good.
type entryLog struct {
	f *os.File
}

// openEntryLog opens --entries to append, first cutting a line a crash
// left unfinished, so that every line stays one JSON document.
func openEntryLog(path string) (*entryLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, withHint(err, "--entries is a file the monitor appends to")
	}
	if err := cutPartialLine(f); err != nil {
		f.Close()
		return nil, withHint(fmt.Errorf("--entries %s: %w", path, err), "--entries is a regular file the monitor appends to")
	}
	return &entryLog{f: f}, nil
}

// cutPartialLine truncates f after its last newline.
func cutPartialLine(f *os.File) error {
	info, err := f.Stat()
	if err != nil || !info.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	end := info.Size()
	buf := make([]byte, 4096)
	for end > 0 {
		n := min(end, int64(len(buf)))
		if _, err := f.ReadAt(buf[:n], end-n); err != nil {
			return err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = end - n + int64(i) + 1
			break
		}
		end -= n
	}
	if end == info.Size() {
		return nil
	}
	if err := f.Truncate(end); err != nil {
		return err
	}
	return f.Sync()
}

// add appends the batch as whole lines in one write, and fsyncs.
func (o *entryLog) add(origin string, batch []listed) error {
	if o == nil || len(batch) == 0 {
		return nil
	}
	var buf bytes.Buffer
	for _, l := range batch {
		data, err := json.Marshal(struct {
			Origin string `json:"origin"`
			listed
		}{origin, l})
		if err != nil {
			return err
		}
		buf.Write(data)
		buf.WriteByte('\n')
	}
	info, err := o.f.Stat()
	if err != nil {
		return err
	}
	if _, err := o.f.Write(buf.Bytes()); err != nil {
		o.f.Truncate(info.Size()) // no part of the batch stays: it is reported again next time
		return fmt.Errorf("appending to --entries: %w", err)
	}
	return o.f.Sync()
}

func (o *entryLog) close() {
	if o != nil {
		o.f.Close()
	}
}
