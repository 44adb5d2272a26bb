package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/transparency-dev/formats/log"
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
	Alarm       *monitorAlarm `json:"alarm"`      // a rollback or split view proven; nil if none
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
		return &st, nil, nil
	}
	cp, err := ledger.VerifyCheckpoint([]byte(st.Checkpoint), key)
	if err != nil {
		return nil, nil, fmt.Errorf("its checkpoint: %w", err)
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
	out    *entryLog
}

// loadFollower reads the state of the log key signs, if the monitor has
// followed it before.
func loadFollower(g *globals, dir, raw, key string, c *apiClient, prefix string, out *entryLog) (*follower, error) {
	origin, _, _ := strings.Cut(key, "+")
	f := &follower{g: g, url: raw, c: c, prefix: prefix, key: key, dir: dir, name: fileName(origin), out: out,
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
			"give the --verifier-key this state was made with, or move the file away to follow the appliance afresh")
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
		fmt.Fprintf(f.g.stderr, "custodian: warning: %s did not answer (%s); trying again in %s\n", f.url, a.Message, wait)
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

// poll fetches the served checkpoint, verifies it, proves it consistent
// with the one seen before, reads and reports the new entries, and only
// then keeps the new checkpoint.
func (f *follower) poll(ctx context.Context) error {
	if f.st.Alarm != nil {
		return f.st.Alarm // proven for good: the log is not one history
	}
	signed, err := fetchCapped(ctx, f.c, f.prefix+"checkpoint", ledger.MaxCheckpointSize)
	if err != nil {
		return f.alarm(findUnreachable, "fetching %scheckpoint: %v", f.prefix, err)
	}
	cp, err := f.verify(signed)
	if err != nil {
		return f.alarm(findBadSignature, "the checkpoint %s serves does not verify with the pinned key: %v", f.url, err)
	}
	old := f.seen
	switch {
	case old != nil && cp.Size < old.Size:
		return f.proven(findRollback, signed, "the ledger shrank: %s serves a signed tree of %d entries, after one of %d", f.url, cp.Size, old.Size)
	case old != nil && cp.Size == old.Size:
		if !bytes.Equal(cp.Hash, old.Hash) {
			return f.proven(findSplitView, signed, "two signed trees of %d entries with different root hashes", cp.Size)
		}
		f.g.printf("%s: %d entries, none new\n", f.st.Origin, cp.Size)
		return nil
	}
	src := newRemoteTiles(ctx, f.c, f.prefix, signed, cp)
	if old != nil {
		proof, err := tlog.ProveTree(int64(cp.Size), int64(old.Size), src.hashes)
		if err != nil {
			return f.tileAlarm(src.failed, errors.New("its hash tiles are not the tree its checkpoint signs"))
		}
		if ledger.VerifyConsistency(old, cp, proof) != nil {
			return f.proven(findSplitView, signed, "the signed tree of %d entries does not extend the signed tree of %d seen before", cp.Size, old.Size)
		}
	}
	n, err := f.readEntries(src, f.size(), int64(cp.Size))
	if err != nil {
		return err
	}
	if err := f.out.sync(); err != nil {
		return err
	}
	f.st.Checkpoint, f.seen = string(signed), cp
	if err := f.save(); err != nil {
		return err
	}
	f.g.printf("%s: %d entries, %d new, consistent with every checkpoint seen before\n", f.st.Origin, cp.Size, n)
	return nil
}

// verify checks a served checkpoint: signed by the pinned key, for its
// origin. Witness cosignatures, once appliances gather them, are checked
// here too (k of the named witnesses), so that the monitor only accepts a
// tree the witnesses also saw.
func (f *follower) verify(signed []byte) (*log.Checkpoint, error) {
	return ledger.VerifyCheckpoint(signed, f.key)
}

func (f *follower) size() int64 {
	if f.seen == nil {
		return 0
	}
	return int64(f.seen.Size)
}

// tileAlarm says why reading tiles failed: a fetch that failed (failed not
// nil) says nothing about the log; anything else is tiles that are not the
// signed tree.
func (f *follower) tileAlarm(failed, err error) *monitorAlarm {
	var fe *fetchError
	if failed != nil || errors.As(err, &fe) {
		return f.alarm(findUnreachable, "fetching tiles: %v", cmp.Or(failed, err))
	}
	return f.alarm(findBadTiles, "%s: %v", f.url, err)
}

// proven keeps the served checkpoint beside the one seen before (two
// signed checkpoints that cannot be one history are the proof to
// publish), records the alarm, and returns it.
func (f *follower) proven(kind finding, served []byte, format string, args ...any) error {
	a := f.alarm(kind, format, args...)
	stamp := time.Now().UTC().Format("20060102T150405Z")
	base := filepath.Join(f.dir, fmt.Sprintf("%s.%s.%s", f.name, strings.ReplaceAll(a.Kind, " ", "-"), stamp))
	for suffix, data := range map[string][]byte{".seen.checkpoint": []byte(f.st.Checkpoint), ".served.checkpoint": served} {
		if err := durable.CreateFile(base+suffix, data, 0o600); err != nil {
			return fmt.Errorf("keeping the evidence of a %s: %w", a.Kind, err)
		}
	}
	a.Evidence = []string{base + ".seen.checkpoint", base + ".served.checkpoint"}
	f.st.Alarm = a
	if err := f.save(); err != nil {
		return fmt.Errorf("recording a %s: %w", a.Kind, err)
	}
	return a
}

// readEntries reads entries from..size-1 from the entry bundles, each
// checked against the signed tree's leaf hashes, and reports them.
func (f *follower) readEntries(src *remoteTiles, from, size int64) (int64, error) {
	var n int64
	for first := from &^ (1<<ledger.TileHeight - 1); first < size; first += 1 << ledger.TileHeight {
		t := tlog.Tile{H: ledger.TileHeight, L: -1, N: first >> ledger.TileHeight, W: int(min(size-first, 1<<ledger.TileHeight))}
		data, err := src.Tile(t)
		if err != nil {
			return 0, f.tileAlarm(nil, err)
		}
		entries, err := ledger.SplitBundle(data, t.W)
		if err != nil {
			return 0, f.tileAlarm(nil, err)
		}
		for i, raw := range entries {
			index := first + int64(i)
			if index < from {
				continue
			}
			e, err := ledger.ParseEntry(raw)
			if err != nil {
				return 0, f.alarm(findBadTiles, "entry %d is in the signed tree but is not a ledger entry: %v", index, err)
			}
			if err := f.report(describe(ledger.RangeEntry{Index: index, Entry: string(raw)}, e)); err != nil {
				return 0, err
			}
			n++
		}
	}
	return n, nil
}

// report prints a new entry and appends it to the entry log.
func (f *follower) report(l listed) error {
	f.g.printf("%s %s\n", f.st.Origin, l.line())
	return f.out.add(f.st.Origin, l)
}

// entryLog is --entries: new entries as JSON lines, appended and fsynced
// after each poll, before the state moves on. A crash in between repeats
// a poll's entries at the next one; (origin, index) names each for good.
type entryLog struct {
	f *os.File
	w *bufio.Writer
}

func openEntryLog(path string) (*entryLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, withHint(err, "--entries is a file the monitor appends to")
	}
	return &entryLog{f: f, w: bufio.NewWriter(f)}, nil
}

func (o *entryLog) add(origin string, l listed) error {
	if o == nil {
		return nil
	}
	data, err := json.Marshal(struct {
		Origin string `json:"origin"`
		listed
	}{origin, l})
	if err != nil {
		return err
	}
	o.w.Write(data)
	return o.w.WriteByte('\n')
}

func (o *entryLog) sync() error {
	if o == nil {
		return nil
	}
	if err := o.w.Flush(); err != nil {
		return err
	}
	return o.f.Sync()
}

func (o *entryLog) close() {
	if o != nil {
		o.f.Close()
	}
}
