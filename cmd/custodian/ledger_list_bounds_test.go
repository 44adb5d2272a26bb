package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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

	bolt "go.etcd.io/bbolt"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/tpm/tpmtest"
)

// fakeLedger is a hostile appliance that holds its own checkpoint key: a
// ledger of 2^levels identical entries, whose tree hash and proofs cost
// levels hashes to make.
type fakeLedger struct {
	signer note.Signer
	vk     string
	entry  []byte
	levels int
	size   uint64 // the size it claims (may differ from 2^levels to lie)
	sub    []tlog.Hash
	pages  int
	stopAt int
}

func newFakeLedger(t *testing.T, levels int) *fakeLedger {
	skey, vkey, err := note.GenerateKey(rand.Reader, "custodian/court-a")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := note.NewSigner(skey)
	e := ledger.Entry{Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "no-press"}
	entry, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeLedger{signer: s, vk: vkey, entry: entry, levels: levels, size: 1 << levels}
	h := tlog.RecordHash(entry)
	for range levels + 1 {
		f.sub = append(f.sub, h)
		h = tlog.NodeHash(h, h)
	}
	return f
}

func (f *fakeLedger) key() string { return f.vk }
func (f *fakeLedger) checkpoint() ([]byte, error) {
	cp := log.Checkpoint{Origin: "custodian/court-a", Size: f.size, Hash: f.sub[f.levels][:]}
	return note.Sign(&note.Note{Text: string(cp.Marshal())}, f.signer)
}
func (f *fakeLedger) prove(from, to int64) (*ledger.RangeProof, error) {
	f.pages++
	if f.stopAt > 0 && f.pages > f.stopAt {
		return nil, errors.New("stopped by the test")
	}
	signed, _ := f.checkpoint()
	rp := &ledger.RangeProof{Checkpoint: string(signed)}
	for i := from; i <= to; i++ {
		rp.Entries = append(rp.Entries, ledger.RangeEntry{Index: i, Entry: string(f.entry), Proof: f.sub[:f.levels]})
	}
	return rp, nil
}
func (f *fakeLedger) consistency(old, size int64) (tlog.TreeProof, error) {
	return nil, errors.New("unused")
}

// TestInvariantListIsBoundedAndStreams: a checkpoint that claims 2^40
// entries (cheap to fake for a server holding the checkpoint key) is
// listed at most maxListRun entries per run, with the next --from named;
// and each page is printed once it is checked, so a late failure loses
// nothing already proven.
func TestInvariantListIsBoundedAndStreams(t *testing.T) {
	f := newFakeLedger(t, 40)
	var stdout, stderr bytes.Buffer
	g := &globals{stdout: &stdout, stderr: &stderr}
	if err := (&listRun{g: g, src: f, page: ledger.MaxRange}).list(0, -1); err != nil {
		t.Fatal(err)
	}
	if want := (maxListRun + ledger.MaxRange - 1) / ledger.MaxRange; f.pages != want {
		t.Errorf("fetched %d pages, want %d", f.pages, want)
	}
	if n := strings.Count(stdout.String(), "\n"); n != maxListRun+1 {
		t.Errorf("printed %d lines, want %d entries and a summary", n, maxListRun)
	}
	if !strings.Contains(stderr.String(), fmt.Sprintf("continue with --from %d", maxListRun)) {
		t.Errorf("no way to continue: %q", stderr.String())
	}

	f = newFakeLedger(t, 40)
	f.stopAt = 3
	stdout.Reset()
	err := (&listRun{g: g, src: f, page: ledger.MaxRange}).list(0, -1)
	if err == nil || strings.Count(stdout.String(), "\n") != 3*ledger.MaxRange {
		t.Fatalf("a failure on page 4: %v, and %d lines printed before it", err, strings.Count(stdout.String(), "\n"))
	}
}

// TestListRefusesCheckpointSizeAboveMaxInt64: a checkpoint size that does
// not fit an index is the server's claim, not a bad --from or --to.
func TestListRefusesCheckpointSizeAboveMaxInt64(t *testing.T) {
	f := newFakeLedger(t, 4)
	f.size = math.MaxUint64
	g := &globals{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	for _, r := range [][2]int64{{0, -1}, {5, 6}} {
		err := (&listRun{g: g, src: f, page: ledger.MaxRange}).list(r[0], r[1])
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("claims %d entries", uint64(math.MaxUint64))) {
			t.Errorf("--from %d --to %d: %v", r[0], r[1], err)
		}
	}
}

// TestListExplainsBadServerAnswers: an oversized, truncated or foreign
// answer is named as the server's answer to its request, with a hint, and
// without the decoder's own text.
func TestListExplainsBadServerAnswers(t *testing.T) {
	f := newFakeLedger(t, 8)
	for name, body := range map[string]string{
		"2 MiB answer":   `{"checkpoint":"` + strings.Repeat("a", 2<<20) + `"}`,
		"unknown field":  `{"checkpoint":"x","entries":[],"extra":1}`,
		"wrong type":     `{"checkpoint":5,"entries":[]}`,
		"truncated JSON": `{"checkpoint":"x","entr`,
		"html":           `<html>hello</html>`,
		"not a note":     `{"checkpoint":"x","entries":[]}`,
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/v1/checkpoint":
				cp, _ := f.checkpoint()
				w.Write(cp)
			default:
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, body)
			}
		}))
		code, _, errOut := custodian(t, "ledger", "list", "--server", srv.URL, "--insecure-http", "--verifier-key", f.vk, "--from", "0", "--to", "3")
		srv.Close()
		if code == 0 || !strings.Contains(errOut, "hint:") || strings.Contains(errOut, "jsontext") || strings.Contains(errOut, "malformed note") {
			t.Errorf("%s: exit %d %q", name, code, errOut)
		}
	}
}

// TestLocalListWhileServingNamesTheDaemon: with the ledger held open (as
// custodian serve holds it), the local list says so and how to read it.
func TestLocalListWhileServingNamesTheDaemon(t *testing.T) {
	sw := tpmtest.StartSwtpm(t)
	dir := t.TempDir()
	d := &device{id: "court-a", sw: sw, data: filepath.Join(dir, "data")}
	measureBoot(t, sw)
	mustRun(t, d.args("enroll", "--id", "court-a", "--out", filepath.Join(dir, "e.json"))...)
	mustRun(t, d.args("ledger", "init")...)
	db, err := bolt.Open(filepath.Join(d.data, ledger.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	code, _, errOut := custodian(t, d.args("ledger", "list")...)
	if code == 0 || !strings.Contains(errOut, "open in another custodian process") || !strings.Contains(errOut, "--server") || strings.Contains(errOut, ": timeout") {
		t.Fatalf("exit %d %q", code, errOut)
	}

	// The network flags are refused without --server: a pinned key
	// would otherwise go unchecked.
	db.Close()
	_, other, _ := note.GenerateKey(rand.Reader, "custodian/court-a")
	for _, flags := range [][]string{{"--verifier-key", other}, {"--insecure-http"}, {"--ca", filepath.Join(dir, "e.json")}} {
		code, _, errOut := custodian(t, d.args(append([]string{"ledger", "list"}, flags...)...)...)
		if code == 0 || !strings.Contains(errOut, flags[0]+" needs --server") {
			t.Errorf("%v without --server: exit %d %q", flags, code, errOut)
		}
	}
}

// TestListStaysBelowTheRateLimit: an honest listing of 4096 entries
// against the daemon's own limiter draws no rate_limited refusal (each one
// is tallied into the ledger and starves others at the same address).
func TestListStaysBelowTheRateLimit(t *testing.T) {
	f := newFakeLedger(t, 12)
	lim := release.NewLimiter(release.DefaultRate, release.DefaultBurst)
	var ok, limited int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !lim.Allow("auditor") {
			limited++
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":"rate_limited","message":"too many requests; slow down"}}`)
			return
		}
		ok++
		if r.URL.Path == "/v1/checkpoint" {
			cp, _ := f.checkpoint()
			w.Write(cp)
			return
		}
		var from, to int64
		fmt.Sscan(r.URL.Query().Get("from"), &from)
		fmt.Sscan(r.URL.Query().Get("to"), &to)
		rp, _ := f.prove(from, to)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rp)
	}))
	defer srv.Close()
	code, out, errOut := custodian(t, "ledger", "list", "--server", srv.URL, "--insecure-http", "--verifier-key", f.vk)
	if code != 0 || !strings.Contains(out, "4096 entries (0 to 4095)") {
		t.Fatalf("exit %d %q", code, errOut)
	}
	if limited > 0 {
		t.Errorf("%d answered, %d refused rate_limited", ok, limited)
	}
}

// forkedLedger answers its checkpoint from one history and its pages from
// another of the same size, both signed with the appliance's key.
type forkedLedger struct {
	*fakeLedger
	other *fakeLedger
}

func (f forkedLedger) prove(from, to int64) (*ledger.RangeProof, error) {
	return f.other.prove(from, to)
}

// TestInvariantListKeepsForkEvidence: two signed checkpoints of one size
// with different roots are the proof of a fork; ledger list prints both
// and, with --evidence-out, writes both.
func TestInvariantListKeepsForkEvidence(t *testing.T) {
	a := newFakeLedger(t, 4)
	b := *a
	e := ledger.Entry{Time: time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: "no-press"}
	b.entry, _ = e.Marshal()
	h := tlog.RecordHash(b.entry)
	b.sub = nil
	for range b.levels + 1 {
		b.sub = append(b.sub, h)
		h = tlog.NodeHash(h, h)
	}
	cpA, _ := a.checkpoint()
	cpB, _ := b.checkpoint()
	var stdout, stderr bytes.Buffer
	g := &globals{stdout: &stdout, stderr: &stderr}
	dir := t.TempDir()
	err := (&listRun{g: g, src: forkedLedger{a, &b}, page: ledger.MaxRange, evidence: dir}).list(0, -1)
	if !errors.Is(err, ledger.ErrTwoHistories) || !strings.Contains(err.Error(), "two signed trees of 16 entries with different root hashes") {
		t.Fatalf("fork not detected: %v", err)
	}
	if !strings.Contains(stderr.String(), string(cpA)) || !strings.Contains(stderr.String(), string(cpB)) {
		t.Errorf("both checkpoints not printed: %q", stderr.String())
	}
	if got := mustRead(t, filepath.Join(dir, "checkpoint-read-first.txt")); !bytes.Equal(got, cpA) {
		t.Errorf("first checkpoint written: %q", got)
	}
	if got := mustRead(t, filepath.Join(dir, "checkpoint-read-later.txt")); !bytes.Equal(got, cpB) {
		t.Errorf("later checkpoint written: %q", got)
	}
	if !strings.Contains(fmt.Sprint(hintsOf(err)), dir) {
		t.Errorf("the hint does not say where: %v", hintsOf(err))
	}
}

// TestVerifierKeyFileUnderCustodianDir: --verifier-key reads the file
// custodian/ledger-key.pub, though a literal key starts the same way.
func TestVerifierKeyFileUnderCustodianDir(t *testing.T) {
	f := newFakeLedger(t, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cp, _ := f.checkpoint()
		w.Write(cp)
	}))
	defer srv.Close()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "custodian"), 0o755)
	os.WriteFile(filepath.Join(dir, "custodian", "ledger-key.pub"), []byte(f.vk+"\n"), 0o644)
	t.Chdir(dir)
	mustRun(t, "ledger", "checkpoint", "--server", srv.URL, "--insecure-http", "--verifier-key", "custodian/ledger-key.pub")
}
