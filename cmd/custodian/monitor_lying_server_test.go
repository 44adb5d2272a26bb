package main

// custodian monitor against a tile server that lies, replays, withholds
// or rate-limits: what the monitor reports, keeps and latches.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
)

// bLog is one signed tree of a log: its stored hashes, its entries and
// its signed checkpoint.
type bLog struct {
	hashes  []tlog.Hash
	entries [][]byte
	signed  []byte
}

func (l *bLog) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		out[i] = l.hashes[x]
	}
	return out, nil
}

// forkEntry is entry i of another history: another key ID.
func forkEntry(i int64) []byte {
	e := ledger.Entry{Time: time.Unix(1e9, 0).UTC(), Kind: ledger.KindRefusal, Counter: uint64(i + 1),
		Outcome: ledger.OutcomeRefused, Reason: "no-press", KeyID: "fork", Commitment: make([]byte, 32)}
	data, _ := e.Marshal()
	return data
}

// newBLog signs a tree of n entries: memEntry(i) for i < split, forkEntry
// after.
func newBLog(tb testing.TB, signer note.Signer, n, split int64) *bLog {
	tb.Helper()
	l := &bLog{}
	for i := range n {
		e := memEntry(i)
		if i >= split {
			e = forkEntry(i)
		}
		hs, err := tlog.StoredHashes(i, e, l)
		if err != nil {
			tb.Fatal(err)
		}
		l.hashes = append(l.hashes, hs...)
		l.entries = append(l.entries, e)
	}
	root, err := tlog.TreeHash(n, l)
	if err != nil {
		tb.Fatal(err)
	}
	cp := log.Checkpoint{Origin: signer.Name(), Size: uint64(n), Hash: root[:]}
	if l.signed, err = note.Sign(&note.Note{Text: string(cp.Marshal())}, signer); err != nil {
		tb.Fatal(err)
	}
	return l
}

// bServer serves a bLog as tlog tiles under /log/, the log swapped at
// will; hook may answer a path itself.
type bServer struct {
	cur  atomic.Pointer[bLog]
	hook atomic.Pointer[func(w http.ResponseWriter, path string) bool]
	srv  *httptest.Server
}

func newBServer(t *testing.T, l *bLog) *bServer {
	s := &bServer{}
	s.cur.Store(l)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *bServer) setHook(h func(w http.ResponseWriter, path string) bool) { s.hook.Store(&h) }

func (s *bServer) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/log/")
	if h := s.hook.Load(); h != nil && (*h)(w, path) {
		return
	}
	l := s.cur.Load()
	if path == "checkpoint" {
		w.Write(l.signed)
		return
	}
	t, err := ledger.ParseTilePath(path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer func() {
		if recover() != nil {
			http.NotFound(w, r)
		}
	}()
	if t.L >= 0 {
		data, err := tlog.ReadTileData(t, l)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
		return
	}
	var out []byte
	for i := range int64(t.W) {
		e := l.entries[t.N<<ledger.TileHeight+i]
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
	}
	w.Write(out)
}

func newBKey(t *testing.T) (note.Signer, string) {
	skey, vkey, err := note.GenerateKey(rand.Reader, "custodian/bench")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return signer, vkey
}

func countLines(t *testing.T, path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte("\n"))
}

// TestInvariantMonitorReplayIsNotProofOfRollback: an old checkpoint the
// appliance really signed, served again (a stale cache, a lagging mirror,
// anyone who kept it), is reported as stale (exit 8), not latched, and
// the newer checkpoint stays the one followed. A real split view is
// latched (exit 7); --clear-alarm keeps the last verified checkpoint, so
// the same fork is found again rather than trusted afresh.
func TestInvariantMonitorReplayIsNotProofOfRollback(t *testing.T) {
	signer, vkey := newBKey(t)
	old, now := newBLog(t, signer, 5, 5), newBLog(t, signer, 9, 9)
	s := newBServer(t, now)
	state := t.TempDir()
	args := []string{"--appliance", s.srv.URL + "/log/", "--verifier-key", vkey, "--state", state}
	if code, out, errOut := runMonitor(args...); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	s.cur.Store(old) // replay: a checkpoint the appliance signed earlier
	if code, _, errOut := runMonitor(args...); code != int(findStale) || !strings.Contains(errOut, "stale or rolled back") || strings.Contains(errOut, "evidence") {
		t.Errorf("replayed old checkpoint: exit %d\n%s", code, errOut)
	}
	s.cur.Store(now)
	if code, out, errOut := runMonitor(args...); code != 0 || !strings.Contains(out, "9 entries, none new") {
		t.Errorf("honest again after a replay: exit %d\n%s%s", code, out, errOut)
	}
	s.cur.Store(newBLog(t, signer, 12, 3)) // another history, forked at 3
	if code, _, errOut := runMonitor(args...); code != int(findSplitView) {
		t.Fatalf("a fork: exit %d\n%s", code, errOut)
	}
	code, out, errOut := runMonitor(append(args, "--clear-alarm", "custodian/bench")...)
	if code != int(findSplitView) || !strings.Contains(errOut, "alarm cleared") || strings.Contains(out, "12 new") {
		t.Errorf("--clear-alarm with the fork still served: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := runMonitor(append(args, "--clear-alarm", "custodian/other")...); code != 1 || !strings.Contains(errOut, "no --appliance of this run follows that log") {
		t.Errorf("--clear-alarm of a log not followed: exit %d\n%s", code, errOut)
	}
}

// TestInvariantMonitorReportsEachVerifiedEntryOnce: entries are printed
// and appended only once their batch verified, as whole lines; a poll
// that fails on a bundle reports nothing of its batch, retries and later
// polls report nothing twice, and a line a crash cut is removed.
func TestInvariantMonitorReportsEachVerifiedEntryOnce(t *testing.T) {
	signer, vkey := newBKey(t)
	s := newBServer(t, newBLog(t, signer, 600, 600))
	s.setHook(func(w http.ResponseWriter, path string) bool {
		if path == "tile/entries/002.p/88" {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	state := t.TempDir()
	entries := filepath.Join(t.TempDir(), "entries.jsonl")
	if err := os.WriteFile(entries, []byte(`{"origin":"custodian/bench","index":`), 0o600); err != nil { // a crash's cut line
		t.Fatal(err)
	}
	args := []string{"--retries", "1", "--appliance", s.srv.URL + "/log/", "--verifier-key", vkey, "--state", state, "--entries", entries}
	code, out, _ := runMonitor(args...)
	if code != int(findUnreachable) || strings.Contains(out, "custodian/bench   ") || countLines(t, entries) != 0 {
		t.Errorf("a batch with a bundle not served: exit %d, %d lines in --entries\n%s", code, countLines(t, entries), out)
	}
	s.setHook(func(http.ResponseWriter, string) bool { return false })
	if code, out, errOut := runMonitor(args...); code != 0 || !strings.Contains(out, "600 entries, 600 new") {
		t.Fatalf("served again: exit %d\n%s%s", code, out, errOut)
	}
	data, err := os.ReadFile(entries)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for i, line := range bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) {
		var e struct{ Index int64 }
		if err := json.Unmarshal(line, &e); err != nil || seen[e.Index] {
			t.Fatalf("--entries line %d is not one new entry: %.80s", i+1, line)
		}
		seen[e.Index] = true
	}
	if len(seen) != 600 {
		t.Errorf("--entries holds %d entries of 600", len(seen))
	}
}

// TestInvariantMonitorWithheldTilesAreBadTiles: an appliance that signs
// another history and then withholds (404) or oversizes the tiles that
// would prove it is reported as bad tiles (exit 4), not as a network
// failure, and its signed checkpoint is kept in --state as evidence.
func TestInvariantMonitorWithheldTilesAreBadTiles(t *testing.T) {
	signer, vkey := newBKey(t)
	s := newBServer(t, newBLog(t, signer, 300, 300))
	state := t.TempDir()
	args := []string{"--appliance", s.srv.URL + "/log/", "--verifier-key", vkey, "--state", state}
	if code, out, errOut := runMonitor(args...); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	fork := newBLog(t, signer, 400, 100)
	s.cur.Store(fork)
	for _, c := range []struct {
		name string
		hook func(w http.ResponseWriter, path string) bool
	}{
		{"tiles not found", func(w http.ResponseWriter, path string) bool {
			if strings.HasPrefix(path, "tile/") {
				http.NotFound(w, nil)
				return true
			}
			return false
		}},
		{"a hash tile one byte too long", func(w http.ResponseWriter, path string) bool {
			if strings.HasPrefix(path, "tile/0/") {
				w.Write(make([]byte, 256*32+1))
				return true
			}
			return false
		}},
	} {
		s.setHook(c.hook)
		code, _, errOut := runMonitor(args...)
		if code != int(findBadTiles) {
			t.Errorf("%s: a signed tree whose tiles the server withholds or breaks: exit %d\n%s", c.name, code, errOut)
		}
		kept := false
		files, _ := os.ReadDir(state)
		for _, f := range files {
			data, _ := os.ReadFile(filepath.Join(state, f.Name()))
			if bytes.Contains(data, fork.signed[:40]) || bytes.Contains(data, bytes.ReplaceAll(fork.signed[:40], []byte("\n"), []byte(`\n`))) {
				kept = true
			}
		}
		if !kept {
			t.Errorf("%s: the signed checkpoint of the unproven tree of 400 was not kept in --state", c.name)
		}
	}
}

// TestInvariantMonitorQuotesServerText: a server's refusal message (any
// JSON string) is quoted in the report: its newlines cannot forge report
// lines, nor its escape sequences reach the terminal.
func TestInvariantMonitorQuotesServerText(t *testing.T) {
	signer, vkey := newBKey(t)
	s := newBServer(t, newBLog(t, signer, 3, 3))
	s.setHook(func(w http.ResponseWriter, path string) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"busy","message":"\u001b[2K\rok\ncustodian/bench: 3 entries, none new"}}`))
		return true
	})
	code, out, errOut := runMonitor("--appliance", s.srv.URL+"/log/", "--verifier-key", vkey, "--state", t.TempDir())
	if code != int(findUnreachable) || !strings.Contains(errOut, `\x1b[2K\rok\ncustodian/bench`) {
		t.Errorf("exit %d\nstdout: %q\nstderr: %q", code, out, errOut)
	}
	if strings.Contains(errOut, "\x1b") {
		t.Error("an escape sequence from the server reached the report")
	}
	for _, line := range strings.Split(errOut, "\n") {
		if strings.HasPrefix(line, "custodian/bench: ") {
			t.Errorf("the server forged a report line: %q", line)
		}
	}
}

// TestMonitorFirstPollBehindTheDefaultRateLimit: behind the appliance's
// default per-client limiter (release.DefaultRate, DefaultBurst), a first
// poll of 3,000 entries completes: the monitor paces its requests and
// waits out a 429's Retry-After, and reports each entry once.
func TestMonitorFirstPollBehindTheDefaultRateLimit(t *testing.T) {
	signer, vkey := newBKey(t)
	s := newBServer(t, newBLog(t, signer, 3000, 3000))
	lim := release.NewLimiter(release.DefaultRate, release.DefaultBurst)
	inner := s.srv.Config.Handler
	s.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if !lim.Allow(host) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"error":{"code":"rate_limited","message":"too many requests from ` + host + `; slow down"}}`))
			return
		}
		inner.ServeHTTP(w, r)
	})
	state := t.TempDir()
	var out, errOut bytes.Buffer
	code := run([]string{"monitor", "--once", "--insecure-http", "--appliance", s.srv.URL + "/log/",
		"--verifier-key", vkey, "--state", state}, &out, &errOut)
	if n := strings.Count(out.String(), "custodian/bench   "); code != 0 || n != 3000 {
		t.Errorf("the first poll of 3000 entries behind the default limit: exit %d, %d entry lines\n%s", code, n, errOut.String())
	}
}

// TestMonitorPollsAppliancesAtOnce: an appliance that signs a tree of
// 2^32 identical entries (its tiles cost it nothing: every hash tile of a
// level is the same) does not hold the other appliances of the run, and
// its poll stops after maxPollEntries, saving where it stopped.
func TestMonitorPollsAppliancesAtOnce(t *testing.T) {
	skey, vkey, _ := note.GenerateKey(rand.Reader, "custodian/huge")
	signer, _ := note.NewSigner(skey)
	entry := memEntry(1)
	level := []tlog.Hash{tlog.RecordHash(entry)}
	for range 40 {
		h := level[len(level)-1]
		level = append(level, tlog.NodeHash(h, h))
	}
	const size = int64(1) << 32
	cp := log.Checkpoint{Origin: "custodian/huge", Size: uint64(size), Hash: level[32][:]}
	signed, _ := note.Sign(&note.Note{Text: string(cp.Marshal())}, signer)
	var stopped atomic.Bool
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/log/")
		if stopped.Load() {
			http.NotFound(w, r)
			return
		}
		if path == "checkpoint" {
			w.Write(signed)
			return
		}
		tile, err := ledger.ParseTilePath(path)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		var out []byte
		for range tile.W {
			if tile.L >= 0 {
				out = append(out, level[tile.L*ledger.TileHeight][:]...)
			} else {
				out = binary.BigEndian.AppendUint16(out, uint16(len(entry)))
				out = append(out, entry...)
			}
		}
		w.Write(out)
	}))
	defer huge.Close()
	osigner, ovkey := newBKey(t)
	other := newBServer(t, newBLog(t, osigner, 3, 3))

	state := t.TempDir()
	entries := filepath.Join(t.TempDir(), "entries.jsonl")
	done := make(chan int, 1)
	var out, errOut syncBuf
	go func() {
		done <- run([]string{"monitor", "--once", "--insecure-http", "--retries", "0",
			"--appliance", huge.URL + "/log/", "--verifier-key", vkey,
			"--appliance", other.srv.URL + "/log/", "--verifier-key", ovkey,
			"--state", state, "--entries", entries}, &out, &errOut)
	}()
	polled := false
	for deadline := time.Now().Add(10 * time.Second); !polled && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		polled = strings.Contains(out.String(), "custodian/bench:")
	}
	stopped.Store(true)
	<-done
	if !polled {
		t.Errorf("the other appliance was not polled: one appliance's first poll holds the whole run")
	}
	if lines := countLines(t, entries); lines > maxPollEntries+3 {
		t.Errorf("one poll reported %d entries, more than maxPollEntries", lines)
	}
}

// syncBuf is a bytes.Buffer safe for one writer and one reader.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestMonitorRefusesImpossibleTreeSizes: a signed checkpoint of 2^64-1
// entries is bad tiles (exit 4), kept as evidence but not followed: the
// honest tree after it verifies.
func TestMonitorRefusesImpossibleTreeSizes(t *testing.T) {
	signer, vkey := newBKey(t)
	honest := newBLog(t, signer, 5, 5)
	s := newBServer(t, honest)
	bogus := log.Checkpoint{Origin: "custodian/bench", Size: 1<<64 - 1, Hash: make([]byte, 32)}
	signed, _ := note.Sign(&note.Note{Text: string(bogus.Marshal())}, signer)
	s.setHook(func(w http.ResponseWriter, path string) bool {
		if path == "checkpoint" {
			w.Write(signed)
			return true
		}
		return false
	})
	state := t.TempDir()
	args := []string{"--appliance", s.srv.URL + "/log/", "--verifier-key", vkey, "--state", state}
	if code, out, errOut := runMonitor(args...); code != int(findBadTiles) || !strings.Contains(errOut, "more than any ledger holds") {
		t.Errorf("a tree of 2^64-1 entries: exit %d\n%s%s", code, out, errOut)
	}
	s.setHook(func(http.ResponseWriter, string) bool { return false })
	if code, out, errOut := runMonitor(args...); code != 0 || !strings.Contains(out, "5 entries, 5 new") {
		t.Errorf("then the honest tree of 5: exit %d\n%s%s", code, out, errOut)
	}
}

// TestMonitorFollowsFromAnEmptyTree: a monitor that first saw an empty
// tree (a static copy exported before its first entry) follows the log
// as it grows: every tree extends the empty one.
func TestMonitorFollowsFromAnEmptyTree(t *testing.T) {
	signer, vkey := newBKey(t)
	s := newBServer(t, newBLog(t, signer, 0, 0))
	state := t.TempDir()
	args := []string{"--appliance", s.srv.URL + "/log/", "--verifier-key", vkey, "--state", state}
	if code, out, errOut := runMonitor(args...); code != 0 {
		t.Fatalf("an empty tree: exit %d\n%s%s", code, out, errOut)
	}
	s.cur.Store(newBLog(t, signer, 5, 5))
	if code, out, errOut := runMonitor(args...); code != 0 || !strings.Contains(out, "5 entries, 5 new") {
		t.Errorf("an honest log that grew from empty: exit %d\n%s%s", code, out, errOut)
	}
}

// TestMonitorWebPageIsNotABadSignature: a web server's page in place of
// the checkpoint (a mirror's maintenance page, a captive portal, a soft
// 404 with status 200) is no signed note at all: the appliance did not
// answer (exit 3, polled again), not a bad signature (exit 5, final).
func TestMonitorWebPageIsNotABadSignature(t *testing.T) {
	signer, vkey := newBKey(t)
	s := newBServer(t, newBLog(t, signer, 3, 3))
	s.setHook(func(w http.ResponseWriter, path string) bool {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<html><body>Down for maintenance</body></html>\n"))
		return true
	})
	code, _, errOut := runMonitor("--appliance", s.srv.URL+"/log/", "--verifier-key", vkey, "--state", t.TempDir())
	if code != int(findUnreachable) || !strings.Contains(errOut, "not a signed checkpoint") || strings.Contains(errOut, "malformed") {
		t.Errorf("a web page in place of the checkpoint: exit %d\n%s", code, errOut)
	}
}
