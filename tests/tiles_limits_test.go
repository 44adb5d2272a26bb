package tests

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"filippo.io/torchwood"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/release"
)

// The tile routes under the limits custodian serve runs with, and what
// export --server does with a server that misbehaves.

// tileCounter counts the tile requests a handler answers.
type tileCounter struct {
	next  http.Handler
	tiles atomic.Int64
}

func (c *tileCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, release.TlogPrefix+"tile/") {
		c.tiles.Add(1)
	}
	c.next.ServeHTTP(w, r)
}

// TestTilesFollowedUnderServeDefaultLimits: with the limits serve uses
// (a bare release.API), export --server mirrors a ledger of 7,680
// entries, a second run fetches no tile it already holds, and torchwood
// following docs/ledger.md reads every entry (it fetches 50 bundles at
// once).
func TestTilesFollowedUnderServeDefaultLimits(t *testing.T) {
	t.Parallel() // shares nothing with the other tests, and takes long
	r := newRig(t)
	defer r.stop()
	const n = 30 * 256
	growLedger(t, r, n)
	counted := &tileCounter{next: (&release.API{Daemon: r.daemon}).Handler()}
	srv := httptest.NewServer(counted)
	defer srv.Close()
	dir := filepath.Join(t.TempDir(), "mirror")
	export := []string{"ledger", "export", dir, "--server", srv.URL, "--insecure-http", "--verifier-key", r.a.VerifierKey}
	if code, out, errOut := cli(t, export...); code != 0 {
		t.Fatalf("export --server of %d entries: exit %d, %q %q", n, code, out, errOut)
	}
	first := counted.tiles.Load()
	out := mustCLI(t, export...)
	if again := counted.tiles.Load() - first; again != 0 || !strings.Contains(out, "0 files written") {
		t.Errorf("a second export of the same log fetched %d tiles again: %s", again, out)
	}

	f, err := torchwood.NewTileFetcher(srv.URL + release.TlogPrefix)
	if err != nil {
		t.Fatal(err)
	}
	cp := followCheckpoint(t, f, r.a.VerifierKey)
	c, err := torchwood.NewClient(f)
	if err != nil {
		t.Fatal(err)
	}
	var seen int64
	for range c.Entries(context.Background(), cp.Tree, 0) {
		seen++
	}
	if c.Err() != nil || seen != n {
		t.Errorf("torchwood read %d of %d entries under serve's limits: %.300v", seen, n, c.Err())
	}
}

// TestInvariantLedgerReadsNeverUseTheOfficerBucket: an auditor reading
// tiles from the officer's address (one NAT, one proxy) does not use up
// the officer's rate limit; the officer's own requests still are limited.
func TestInvariantLedgerReadsNeverUseTheOfficerBucket(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 10)
	srv := httptest.NewServer((&release.API{Daemon: r.daemon}).Handler())
	defer srv.Close()
	get := func(path string) int {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 3 * release.DefaultBurst {
		if code := get(release.TlogPrefix + "tile/0/000.p/10"); code != http.StatusOK {
			t.Fatalf("tile read %d: %d", i, code)
		}
		if code := get("/v1/checkpoint"); code != http.StatusOK {
			t.Fatalf("checkpoint read %d: %d", i, code)
		}
	}
	if code := get("/v1/requests/0123456789abcdef"); code == http.StatusTooManyRequests {
		t.Fatal("ledger reads used up the officer routes' rate limit")
	}
	limited := false
	for range 2 * release.DefaultBurst {
		limited = limited || get("/v1/requests/0123456789abcdef") == http.StatusTooManyRequests
	}
	if !limited {
		t.Fatal("the officer routes are not rate limited at all")
	}
}

// TestExportWaitsOutRetryAfter: export --server waits as a 429 or 503
// with Retry-After says and carries on.
func TestExportWaitsOutRetryAfter(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 300)
	api := (&release.API{Daemon: r.daemon}).Handler()
	var refused atomic.Int64
	busy := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, release.TlogPrefix+"tile/") && refused.Add(1) <= 2 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader([]int{http.StatusTooManyRequests, http.StatusServiceUnavailable}[refused.Load()-1])
			return
		}
		api.ServeHTTP(w, req)
	})
	srv := httptest.NewServer(busy)
	defer srv.Close()
	mustCLI(t, "ledger", "export", filepath.Join(t.TempDir(), "mirror"), "--server", srv.URL, "--insecure-http", "--verifier-key", r.a.VerifierKey)
	if refused.Load() <= 2 {
		t.Fatal("the server never asked the export to wait")
	}
}

// TestInvariantTileHasOneURL: a percent-encoded spelling of a tile path,
// and a tile path with a query string, are refused with 400: otherwise
// each would be another cache key for the same immutable bytes.
func TestInvariantTileHasOneURL(t *testing.T) {
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 10)
	for path, want := range map[string]int{
		"tile/0/000.p/10": http.StatusOK, "tile/0/%30%30%30.p/10": http.StatusBadRequest,
		"tile/entries/000.p/1%30": http.StatusBadRequest, "tile/0/000.p/10?x=1": http.StatusBadRequest,
		"tile/0/000.p/10?": http.StatusBadRequest,
	} {
		resp, err := r.srv.Client().Get(r.srv.URL + release.TlogPrefix + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// TestInvariantExportServerHoldsOnlyWhatATileCanBe: a server that answers
// every tile with 120 MiB is refused after the few KiB a tile can hold,
// and export --server stays small.
func TestInvariantExportServerHoldsOnlyWhatATileCanBe(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 300)
	api := (&release.API{Daemon: r.daemon}).Handler()
	junk := make([]byte, 1<<20)
	huge := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasPrefix(req.URL.Path, release.TlogPrefix+"tile/") {
			api.ServeHTTP(w, req)
			return
		}
		for range 120 {
			if _, err := w.Write(junk); err != nil {
				return
			}
		}
	})
	srv := httptest.NewServer(huge)
	defer srv.Close()
	// The child's own peak, from GNU time: Maxrss from wait4 here would
	// count this test process's memory too (Go starts a child by vfork,
	// and Linux keeps the parent's peak across the exec).
	timeTool, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		if os.Getenv("CUSTODIAN_REQUIRE_TOOLS") != "" {
			t.Fatal("GNU time (/usr/bin/time) is needed to measure the export's memory")
		}
		t.Skip("GNU time (/usr/bin/time) is needed to measure the export's memory")
	}
	peak := filepath.Join(t.TempDir(), "peak")
	cmd := exec.Command(timeTool, "-f", "%M", "-o", peak, binary, "ledger", "export", filepath.Join(t.TempDir(), "mirror"), "--server", srv.URL, "--insecure-http", "--verifier-key", r.a.VerifierKey)
	out, err := cmd.CombinedOutput()
	kib, perr := os.ReadFile(peak)
	rss, aerr := strconv.ParseInt(strings.TrimSpace(lastLine(string(kib))), 10, 64)
	if perr != nil || aerr != nil {
		t.Fatalf("reading the export's peak memory: %v %v %q", perr, aerr, kib)
	}
	rss >>= 10 // MiB
	if err == nil || !strings.Contains(string(out), "is larger than a tile can be") || !strings.Contains(string(out), "report it to the appliance's operator") {
		t.Fatalf("oversized tiles: %v: %s", err, out)
	}
	if rss > 64 {
		t.Fatalf("export --server held %d MiB for a server's oversized tiles", rss)
	}
}

// TestExportOfAShrunkLogKeepsTheMirror: a server that now signs a
// smaller tree than the mirror published (a rolled-back appliance) is
// refused as the same log gone back, and the mirror is told to keep its
// directory as evidence, not to start over.
func TestExportOfAShrunkLogKeepsTheMirror(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 100)
	old, err := r.a.Ledger.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	growLedger(t, r, 300)
	api := (&release.API{Daemon: r.daemon}).Handler()
	replay := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v1/checkpoint" {
			w.Write(old)
			return
		}
		api.ServeHTTP(w, req)
	})
	good, bad := httptest.NewServer(api), httptest.NewServer(replay)
	defer good.Close()
	defer bad.Close()
	dir := filepath.Join(t.TempDir(), "mirror")
	mustCLI(t, "ledger", "export", dir, "--server", good.URL, "--insecure-http", "--verifier-key", r.a.VerifierKey)
	code, _, errOut := cli(t, "ledger", "export", dir, "--server", bad.URL, "--insecure-http", "--verifier-key", r.a.VerifierKey)
	if code == 0 || strings.Contains(errOut, "empty directory") || strings.Contains(errOut, "another log") ||
		!strings.Contains(errOut, "now signs 100 entries") || !strings.Contains(errOut, "as evidence") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestExportServerMessagesNameCauseAndNextStep: a server whose checkpoint
// another key signs gets a message in the product's terms with a next
// step, not the signature library's text.
func TestExportServerMessagesNameCauseAndNextStep(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 10)
	_, other, err := note.GenerateKey(nil, "custodian/court-a")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer((&release.API{Daemon: r.daemon}).Handler())
	defer srv.Close()
	_, _, errOut := cli(t, "ledger", "export", filepath.Join(t.TempDir(), "m"), "--server", srv.URL, "--insecure-http", "--verifier-key", other)
	if strings.Contains(errOut, "verifiable signatures") || !strings.Contains(errOut, "hint:") || !strings.Contains(errOut, "ledger-key.pub") {
		t.Errorf("another key: %s", errOut)
	}
}

// TestInvariantServerExportChecksTilesAlreadyInDIR: export --server reads
// tiles already in DIR instead of fetching them again, but checks them
// just the same: an altered hash tile or bundle in DIR is refused, and the
// directory keeps its checkpoint.
func TestInvariantServerExportChecksTilesAlreadyInDIR(t *testing.T) {
	t.Parallel() // shares nothing with the other tests
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 300)
	srv := httptest.NewServer((&release.API{Daemon: r.daemon}).Handler())
	defer srv.Close()
	for _, rel := range []string{"tile/0/000", "tile/entries/000"} {
		dir := filepath.Join(t.TempDir(), "mirror")
		export := []string{"ledger", "export", dir, "--server", srv.URL, "--insecure-http", "--verifier-key", r.a.VerifierKey}
		mustCLI(t, export...)
		path := filepath.Join(dir, filepath.FromSlash(rel))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)-1] ^= 1
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cp, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
		code, _, errOut := cli(t, export...)
		if code == 0 || !strings.Contains(errOut, rel+" is not this log's") {
			t.Errorf("an altered %s in DIR: exit %d: %s", rel, code, errOut)
		}
		if now, _ := os.ReadFile(filepath.Join(dir, "checkpoint")); !bytes.Equal(now, cp) {
			t.Errorf("an altered %s in DIR: the checkpoint changed", rel)
		}
	}
}

// TestExportOnAFullDiskSaysSo: an export that runs out of space says so,
// how far it got and what to do, without naming a temporary file, and
// leaves no checkpoint and no temporary file. It needs a small file
// system mounted by hand (mount -t tmpfs -o size=200k tmpfs DIR), named
// by CUSTODIAN_SMALL_FS.
func TestExportOnAFullDiskSaysSo(t *testing.T) {
	mnt := os.Getenv("CUSTODIAN_SMALL_FS")
	if mnt == "" {
		t.Skip("needs CUSTODIAN_SMALL_FS, the mount point of a small (200 KiB) tmpfs")
	}
	r := newRig(t)
	defer r.stop()
	growLedger(t, r, 1500)
	dir := filepath.Join(mnt, "public")
	os.RemoveAll(dir)
	defer os.RemoveAll(dir)
	_, err := r.a.Ledger.Export(dir)
	if err == nil || !strings.Contains(err.Error(), "is full after") || !strings.Contains(err.Error(), "free space and run the export again") || strings.Contains(err.Error(), ".tmp") {
		t.Fatalf("an export larger than the disk: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, "checkpoint")); serr == nil {
		t.Fatal("a checkpoint was written without all its tiles")
	}
	if temps, _ := filepath.Glob(filepath.Join(dir, "tile", "*", ".*tmp*")); len(temps) > 0 {
		t.Errorf("temporary files left: %v", temps)
	}
}

// lastLine is the last non-empty line of s (GNU time writes a line of its
// own before its format when the command fails).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
