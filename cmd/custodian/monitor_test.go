package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// memLog is a log of n generated ledger entries held as its Merkle tree's
// stored hashes (x/mod's tlog), signed by a fresh key: a ledger.TileSource
// that ledger.ExportFrom writes as static tiles. It lets a test or
// benchmark build 10^6 entries in seconds; entry i is rebuilt from i.
type memLog struct {
	hashes []tlog.Hash
	signed []byte
	cp     *log.Checkpoint
	vkey   string
	skey   string
	entry  func(i int64) []byte // entry i's bytes
}

func memEntry(i int64) []byte {
	e := ledger.Entry{Time: time.Unix(1e9, 0).UTC(), Kind: ledger.KindRefusal, Counter: uint64(i + 1),
		Outcome: ledger.OutcomeRefused, Reason: "no-press", KeyID: "2026-11", Commitment: make([]byte, 32)}
	if i%3 == 0 {
		e.Kind, e.Outcome, e.Reason = ledger.KindRelease, ledger.OutcomeOK, ""
	}
	data, err := e.Marshal()
	if err != nil {
		panic(err)
	}
	return data
}

func newMemLog(tb testing.TB, n int64) *memLog {
	return newLogOf(tb, "custodian/bench", n, memEntry)
}

// newLogOf is a log of n entries, entry(i) the i-th, signed by a fresh key
// named origin.
func newLogOf(tb testing.TB, origin string, n int64, entry func(int64) []byte) *memLog {
	tb.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		tb.Fatal(err)
	}
	m := &memLog{vkey: vkey, skey: skey, entry: entry}
	for i := range n {
		hs, err := tlog.StoredHashes(i, entry(i), m)
		if err != nil {
			tb.Fatal(err)
		}
		m.hashes = append(m.hashes, hs...)
	}
	root, err := tlog.TreeHash(n, m)
	if err != nil {
		tb.Fatal(err)
	}
	m.cp = &log.Checkpoint{Origin: origin, Size: uint64(n), Hash: root[:]}
	signer, err := note.NewSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	if m.signed, err = note.Sign(&note.Note{Text: string(m.cp.Marshal())}, signer); err != nil {
		tb.Fatal(err)
	}
	return m
}

func (m *memLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memLog) Checkpoint() ([]byte, *log.Checkpoint, error) { return m.signed, m.cp, nil }
func (m *memLog) TreeHash(n int64) (tlog.Hash, error)          { return tlog.TreeHash(n, m) }

// Tile is a hash tile as x/mod reads it from the stored hashes, or an
// entry bundle: each entry after its length as a big-endian uint16.
func (m *memLog) Tile(t tlog.Tile) ([]byte, error) {
	if t.L >= 0 {
		return tlog.ReadTileData(t, m)
	}
	var out []byte
	for i := range int64(t.W) {
		e := m.entry(t.N<<ledger.TileHeight + i)
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
	}
	return out, nil
}

// staticCopy exports m with the ledger package's export and serves the
// directory under /log/ as any web server would.
func staticCopy(tb testing.TB, m *memLog) (dir string, srv *httptest.Server) {
	tb.Helper()
	dir = filepath.Join(tb.TempDir(), "log")
	if _, err := ledger.ExportFrom(dir, m); err != nil {
		tb.Fatal(err)
	}
	srv = httptest.NewServer(http.StripPrefix("/log", http.FileServer(http.Dir(dir))))
	tb.Cleanup(srv.Close)
	return dir, srv
}

func runMonitor(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(append([]string{"monitor", "--once", "--insecure-http", "--retries", "0"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestMonitorRefusesTilesThatAreNotTheSignedTree: a static copy whose
// entry bundle or hash tile was altered after export is refused with exit
// 4, and the state does not move; the unaltered copy then verifies.
func TestMonitorRefusesTilesThatAreNotTheSignedTree(t *testing.T) {
	m := newMemLog(t, 600)
	dir, srv := staticCopy(t, m)
	for _, c := range []struct{ path, want string }{
		{"tile/entries/002.p/88", "entry 599 of the server's tile/entries/002.p/88 is not in the tree its checkpoint signs"},
		{"tile/0/001", "the server's hash tiles are not the tree its checkpoint signs"},
	} {
		file := filepath.Join(dir, filepath.FromSlash(c.path))
		good, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		bad := bytes.Clone(good)
		bad[len(bad)-1] ^= 1
		if err := os.WriteFile(file, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		state := t.TempDir()
		code, _, errOut := runMonitor("--appliance", srv.URL+"/log/", "--verifier-key", m.vkey, "--state", state)
		if code != 4 || !strings.Contains(errOut, "bad tiles: ") || !strings.Contains(errOut, c.want) {
			t.Errorf("%s altered: exit %d\n%s", c.path, code, errOut)
		}
		if _, err := os.Stat(filepath.Join(state, "custodian_bench.json")); err == nil {
			t.Errorf("%s altered: the state moved", c.path)
		}
		if err := os.WriteFile(file, good, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runMonitor("--appliance", srv.URL+"/log/", "--verifier-key", m.vkey, "--state", t.TempDir())
	if code != 0 || !strings.Contains(out, "custodian/bench: 600 entries, 600 new") || !strings.Contains(out, "custodian/bench      0  2001-09-09T01:46:40Z  release") {
		t.Fatalf("the unaltered copy: exit %d\n%s%s", code, out, errOut)
	}
}

// TestMonitorFlags: bad command lines are refused before anything is
// fetched, each with the flag it is about.
func TestMonitorFlags(t *testing.T) {
	m := newMemLog(t, 1)
	state := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--appliance", "http://a/", "--appliance", "http://b/", "--verifier-key", m.vkey, "--state", state}, "2 --appliance and 1 --verifier-key"},
		{[]string{"--appliance", "ftp://a/", "--verifier-key", m.vkey, "--state", state}, `bad --appliance "ftp://a/"`},
		{[]string{"--appliance", "http://a/copy", "--verifier-key", m.vkey, "--state", state}, "a static copy's URL ends in /"},
		{[]string{"--appliance", "http://a/", "--appliance", "http://b/", "--verifier-key", m.vkey, "--verifier-key", m.vkey, "--state", state}, "are the same log"},
		{[]string{"--appliance", "http://a/", "--verifier-key", m.vkey, "--state", state, "--interval", "10ms"}, "--interval 10ms is too short"},
	} {
		code, _, errOut := runMonitor(c.args...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d\n%s", c.args, code, errOut)
		}
	}
}

// TestMonitorClientSpeaksOfItsAppliance: the monitor's client names
// --appliance, the appliance, and what plain HTTP risks for a public log
// (not warrants: the monitor sends none).
func TestMonitorClientSpeaksOfItsAppliance(t *testing.T) {
	m := newMemLog(t, 1)
	code, _, errOut := runMonitor("--appliance", "http://127.0.0.1:1/", "--verifier-key", m.vkey, "--state", t.TempDir())
	for _, want := range []string{"what --appliance serves", "(127.0.0.1:1)", "cannot reach the appliance at 127.0.0.1:1"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("exit %d, no %q in:\n%s", code, want, errOut)
		}
	}
	if strings.Contains(errOut, "warrants") || strings.Contains(errOut, "--server") || strings.Contains(errOut, "the custodian") {
		t.Errorf("the monitor speaks of a custodian's API:\n%s", errOut)
	}
}

// TestMonitorStateBelongsToItsKey: a state kept for one key is not
// followed with another key of the same name (a new ledger, or a swapped
// key): the monitor stops and says so, and the state stays as it was.
func TestMonitorStateBelongsToItsKey(t *testing.T) {
	first, second := newMemLog(t, 5), newMemLog(t, 7)
	_, srv := staticCopy(t, first)
	state := t.TempDir()
	if code, out, errOut := runMonitor("--appliance", srv.URL+"/log/", "--verifier-key", first.vkey, "--state", state); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	path := filepath.Join(state, "custodian_bench.json")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runMonitor("--appliance", srv.URL+"/log/", "--verifier-key", second.vkey, "--state", state)
	if code != 1 || !strings.Contains(errOut, "it follows the log of key "+first.vkey+", not the --verifier-key given") {
		t.Fatalf("another key: exit %d\n%s", code, errOut)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the state changed")
	}
}

// TestMonitorStateIsLocked: a second monitor on the same --state is
// refused and names the one that holds it.
func TestMonitorStateIsLocked(t *testing.T) {
	m := newMemLog(t, 1)
	state := t.TempDir()
	unlock, err := lockState(state)
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runMonitor("--appliance", "http://127.0.0.1:1", "--verifier-key", m.vkey, "--state", state)
	if code != 1 || !strings.Contains(errOut, "--state "+state+" is in use by custodian") {
		t.Fatalf("a second monitor: exit %d\n%s", code, errOut)
	}
	unlock()
	code, _, errOut = runMonitor("--appliance", "http://127.0.0.1:1", "--verifier-key", m.vkey, "--state", state)
	if code != 3 {
		t.Fatalf("once the lock is free, an appliance that does not answer: exit %d\n%s", code, errOut)
	}
}

// FuzzMonitorState: the state parser accepts only what the monitor
// writes for the pinned key, never panics, and what it accepts writes
// back the same.
func FuzzMonitorState(f *testing.F) {
	m := newMemLog(f, 3)
	st := monitorState{Origin: "custodian/bench", VerifierKey: m.vkey, Checkpoint: string(m.signed)}
	good, _ := json.MarshalIndent(st, "", "  ")
	f.Add(good)
	st.Alarm = &monitorAlarm{Kind: "split view", Origin: "custodian/bench", Message: "m", Evidence: []string{"a", "b"}}
	alarmed, _ := json.MarshalIndent(st, "", "  ")
	f.Add(alarmed)
	f.Add([]byte(`{"origin":"custodian/bench","verifier_key":"` + m.vkey + `","checkpoint":"","alarm":null}`))
	f.Add([]byte(`{"origin":"x","verifier_key":"` + m.vkey + `","alarm":{"kind":"nothing"}}`))
	st.Alarm, st.ReportedTo = nil, new(int64(1))
	resuming, _ := json.MarshalIndent(st, "", "  ")
	f.Add(resuming)
	f.Fuzz(func(t *testing.T, data []byte) {
		st, cp, err := parseMonitorState(data, m.vkey)
		if err != nil {
			return
		}
		if st.Checkpoint != "" && (cp == nil || cp.Origin != "custodian/bench") {
			t.Fatalf("accepted a checkpoint that is not the key's: %v", cp)
		}
		if r := st.ReportedTo; r != nil && (cp == nil || *r < 0 || uint64(*r) >= cp.Size) {
			t.Fatalf("accepted entries reported to %d of a tree of %v", *r, cp)
		}
		again, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := parseMonitorState(again, m.vkey); err != nil {
			t.Fatalf("what was accepted does not read back: %v", err)
		}
	})
}

var monitorMillion = flag.Bool("monitor-1m", false, "also measure a monitor catching up on 10^6 entries (~300 MB of static tiles)")

// BenchmarkMonitorCatchUp measures a monitor's first poll of a static
// copy of a ledger (ledger export's files served by httptest on
// loopback): the checkpoint verified, every hash tile and entry bundle
// fetched and checked, every entry parsed and printed (to nowhere), the
// state written. Beside it, in the same run, two baselines over the same
// log: hashing every entry into a tree again (x/mod's tlog.StoredHashes
// and TreeHash: the least work that checks n entries) and fetching every
// file without checking anything.
//
//	go test -run '^$' -bench MonitorCatchUp -benchtime 3x ./cmd/custodian [-monitor-1m]
func BenchmarkMonitorCatchUp(b *testing.B) {
	sizes := []int64{1e5}
	if *monitorMillion {
		sizes = append(sizes, 1e6)
	}
	for _, n := range sizes {
		m := newMemLog(b, n)
		dir, srv := staticCopy(b, m)
		var hashing, fetching float64
		b.Run(fmt.Sprintf("n=%d/baseline-tree-hash", n), func(b *testing.B) {
			for b.Loop() {
				tree := &memLog{}
				for i := range n {
					hs, _ := tlog.StoredHashes(i, memEntry(i), tree)
					tree.hashes = append(tree.hashes, hs...)
				}
				if root, _ := tlog.TreeHash(n, tree); !bytes.Equal(root[:], m.cp.Hash) {
					b.Fatal("another root")
				}
			}
			hashing = b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(n)/hashing, "entries/s")
		})
		b.Run(fmt.Sprintf("n=%d/baseline-fetch-all", n), func(b *testing.B) {
			var files []string
			filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					rel, _ := filepath.Rel(dir, path)
					files = append(files, filepath.ToSlash(rel))
				}
				return err
			})
			for b.Loop() {
				for _, f := range files {
					resp, err := srv.Client().Get(srv.URL + "/log/" + f)
					if err != nil {
						b.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			fetching = b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(n)/fetching, "entries/s")
		})
		b.Run(fmt.Sprintf("n=%d/monitor", n), func(b *testing.B) {
			for b.Loop() {
				var out, errOut countingWriter
				code := run([]string{"monitor", "--once", "--insecure-http", "--appliance", srv.URL + "/log/", "--verifier-key", m.vkey, "--state", b.TempDir()}, &out, &errOut)
				if code != 0 || out.lines != n+1 {
					b.Fatalf("exit %d, %d lines", code, out.lines)
				}
			}
			took := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(float64(n)/took, "entries/s")
			b.ReportMetric(took, "s/catch-up")
			if hashing > 0 && fetching > 0 {
				b.ReportMetric(took/hashing, "x-tree-hash")
				b.ReportMetric(took/fetching, "x-fetch-all")
			}
		})
	}
}

// countingWriter counts the lines written to it and keeps none.
type countingWriter struct{ lines int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.lines += int64(bytes.Count(p, []byte("\n")))
	return len(p), nil
}
