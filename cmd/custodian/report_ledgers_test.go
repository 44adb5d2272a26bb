package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/report"
)

// reportDay is when the entries of these tests were logged.
var reportDay = time.Date(2026, 11, 5, 12, 0, 0, 0, time.UTC)

// exportedLedger exports a ledger of entries signed by a fresh key named
// origin, and returns its directory and log.
func exportedLedger(t testing.TB, origin string, entries ...ledger.Entry) (string, *memLog) {
	t.Helper()
	raw := make([][]byte, len(entries))
	for i, e := range entries {
		data, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		raw[i] = data
	}
	m := newLogOf(t, origin, int64(len(raw)), func(i int64) []byte { return raw[i] })
	dir, _ := staticCopy(t, m)
	return dir, m
}

func releaseEntry(keyID string) ledger.Entry {
	return ledger.Entry{Time: reportDay, Kind: ledger.KindRelease, Outcome: ledger.OutcomeOK, KeyID: keyID, Commitment: make([]byte, 32)}
}

func failureEntry(keyID, code string) ledger.Entry {
	return ledger.Entry{Time: reportDay, Kind: ledger.KindFailure, Outcome: ledger.OutcomeRefused, Reason: code, KeyID: keyID, Commitment: make([]byte, 32)}
}

func tallyEntry(counts map[string]uint64) ledger.Entry {
	return ledger.Entry{Time: reportDay, Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: counts}
}

// reportOf runs report with args and reads the report.json it wrote.
func reportOf(t testing.TB, args ...string) (*report.Report, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report")
	code, stdout, errOut := runReport(append(args, "--out", out)...)
	if code != 0 {
		t.Fatalf("report %q: exit %d\n%s%s", args, code, stdout, errOut)
	}
	var r report.Report
	data, err := os.ReadFile(filepath.Join(out, report.JSONFile))
	if err != nil || json.Unmarshal(data, &r) != nil {
		t.Fatalf("report.json: %v", err)
	}
	return &r, out
}

// TestInvariantReportPublishesOnlyVerifiedSignatures: a signature line
// added to a genuine checkpoint by whoever serves it (a cosignature
// nobody checked) is not on the page nor in report.json; the checked
// signature is.
func TestInvariantReportPublishesOnlyVerifiedSignatures(t *testing.T) {
	dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	forged := "\u2014 witness.example/ALL-RELEASES-APPROVED " + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 68)) + "\n"
	f, err := os.OpenFile(filepath.Join(dir, "checkpoint"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(forged); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r, out := reportOf(t, "--ledger", dir, "--verifier-key", m.vkey)
	page, err := os.ReadFile(filepath.Join(out, report.PageFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(page), "witness.example") || strings.Contains(r.Logs[0].Checkpoint, "witness.example") {
		t.Errorf("an unchecked signature line is published:\n%s", r.Logs[0].Checkpoint)
	}
	if string(m.signed) != r.Logs[0].Checkpoint {
		t.Errorf("published checkpoint\n%s\nwant the verified one\n%s", r.Logs[0].Checkpoint, m.signed)
	}
}

// TestInvariantReportPublishesNoCredentialsOrPaths: a --ledger URL with a
// user and password is refused, its password in no message; a directory
// is named on the page without its path on this machine.
func TestInvariantReportPublishesNoCredentialsOrPaths(t *testing.T) {
	dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	out := filepath.Join(t.TempDir(), "report")
	code, stdout, errOut := runReport("--insecure-http", "--ledger", "http://auditor:s3cret@127.0.0.1:1/log/", "--verifier-key", m.vkey, "--out", out)
	if code == 0 || strings.Contains(stdout+errOut, "s3cret") || !strings.Contains(errOut, "user or password") {
		t.Errorf("a URL with a password: exit %d\n%s%s", code, stdout, errOut)
	}
	r, out := reportOf(t, "--ledger", dir, "--verifier-key", m.vkey)
	for _, name := range []string{report.PageFile, report.JSONFile} {
		data, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), filepath.Dir(dir)) {
			t.Errorf("%s publishes the directory's path %s", name, dir)
		}
	}
	if !strings.Contains(r.Logs[0].Source, "court-a") {
		t.Errorf("source %q does not name the custodian", r.Logs[0].Source)
	}
}

// TestReportTellsLedgersApartByKey: two ledgers of one custodian ID under
// different keys are refused as such (not as "the same ledger"); a key
// not named custodian/<ID>, or an ID outside the custodian ID rules
// (a right-to-left mark, a zero-width space), is refused.
func TestReportTellsLedgersApartByKey(t *testing.T) {
	a, ma := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	b, mb := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	code, _, errOut := runReport("--ledger", a, "--verifier-key", ma.vkey, "--ledger", b, "--verifier-key", mb.vkey, "--out", filepath.Join(t.TempDir(), "r"))
	if code == 0 || !strings.Contains(errOut, "two ledgers of custodian court-a, signed by different keys") {
		t.Errorf("two keys of court-a: exit %d\n%s", code, errOut)
	}
	for _, origin := range []string{"court-a", "custodian/court-a\u202e\u200b", "custodian/Court-A"} {
		dir, m := exportedLedger(t, origin, releaseEntry("2026-11"))
		code, _, errOut := runReport("--ledger", dir, "--verifier-key", m.vkey, "--out", filepath.Join(t.TempDir(), "r"))
		if code == 0 || !strings.Contains(errOut, "not custodian/ and a custodian ID") {
			t.Errorf("origin %q: exit %d\n%s", origin, code, errOut)
		}
	}
}

// TestReportShowsHowCurrentEachLedgerIs: report.json and the page give
// each ledger's tree size, root hash, verifier key and newest entry.
func TestReportShowsHowCurrentEachLedgerIs(t *testing.T) {
	later := releaseEntry("2026-11")
	later.Time = reportDay.Add(48 * time.Hour)
	dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"), later)
	r, out := reportOf(t, "--ledger", dir, "--verifier-key", m.vkey)
	l := r.Logs[0]
	root := base64.StdEncoding.EncodeToString(m.cp.Hash)
	if l.Size != 2 || l.RootHash != root || l.VerifierKey != m.vkey || l.Newest != later.Time.Format(time.RFC3339) {
		t.Errorf("ledger %+v, want size 2, root %s, key %s, newest %s", l, root, m.vkey, later.Time)
	}
	page, err := os.ReadFile(filepath.Join(out, report.PageFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{root, m.vkey, later.Time.Format(time.RFC3339), "old export"} {
		if !strings.Contains(html.UnescapeString(string(page)), want) {
			t.Errorf("the page does not show %q", want)
		}
	}
}

// TestReportRefusesFilesThatAreNotRegular: a named pipe in place of the
// checkpoint or of a tile, a directory in place of the checkpoint, or a
// missing tile is refused with the file's name, at once.
func TestReportRefusesFilesThatAreNotRegular(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"checkpoint", "checkpoint is not a regular file"},
		{"tile/entries/000.p/1", "tile/entries/000.p/1 is not a regular file"},
		{"tile/0/000.p/1", "tile/0/000.p/1 is not a regular file"},
	} {
		dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
		path := filepath.Join(dir, filepath.FromSlash(c.file))
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runReport("--ledger", dir, "--verifier-key", m.vkey, "--out", filepath.Join(t.TempDir(), "r"))
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("a named pipe for %s: exit %d\n%s", c.file, code, errOut)
		}
	}
	dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	if err := os.Remove(filepath.Join(dir, "tile/entries/000.p/1")); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runReport("--ledger", dir, "--verifier-key", m.vkey, "--out", filepath.Join(t.TempDir(), "r"))
	if code == 0 || !strings.Contains(errOut, "tile/entries/000.p/1 is missing") {
		t.Errorf("a missing tile: exit %d\n%s", code, errOut)
	}
}

// TestReportChecksOutFirst: an --out that cannot be written is refused
// before any ledger is read; one whose data file is a symbolic link gets
// none of the files.
func TestReportChecksOutFirst(t *testing.T) {
	dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runReport("--ledger", filepath.Join(t.TempDir(), "no-such-ledger"), "--verifier-key", m.vkey, "--out", file)
	if code == 0 || !strings.Contains(errOut, "--out "+file+": ") || !strings.Contains(errOut, "not a directory") {
		t.Errorf("--out a file: exit %d\n%s", code, errOut)
	}
	out := t.TempDir()
	if err := os.Symlink(filepath.Join(t.TempDir(), "victim"), filepath.Join(out, report.ReasonsCSV)); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runReport("--ledger", dir, "--verifier-key", m.vkey, "--out", out)
	entries, _ := os.ReadDir(out)
	if code == 0 || len(entries) != 1 {
		t.Errorf("a symbolic link in --out: exit %d, %d files in it\n%s", code, len(entries), errOut)
	}
}

// TestReportPacesOnlyAppliances: an appliance's address is read below its
// rate limit; a static copy's URL and a directory are not paced. A busy
// answer (429 with Retry-After) is waited out and said on stderr.
func TestReportPacesOnlyAppliances(t *testing.T) {
	g := &globals{stdout: io.Discard, stderr: io.Discard}
	network := clientTLS{insecureHTTP: true}
	for raw, paced := range map[string]bool{"http://127.0.0.1:1": true, "http://127.0.0.1:1/log/": false} {
		src, err := parseLedgerSource(raw)
		if err != nil {
			t.Fatal(err)
		}
		c, closeSrc, err := src.client(g, network)
		if err != nil {
			t.Fatal(err)
		}
		closeSrc()
		if (c.pace != nil) != paced {
			t.Errorf("%s: paced %v, want %v", raw, c.pace != nil, paced)
		}
	}

	dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	var busy atomic.Bool
	files := http.StripPrefix("/log", http.FileServer(http.Dir(dir)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/tile/") && busy.CompareAndSwap(false, true) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	out := filepath.Join(t.TempDir(), "r")
	code, _, errOut := runReport("--insecure-http", "--ledger", srv.URL+"/log/", "--verifier-key", m.vkey, "--out", out)
	if code != 0 || !strings.Contains(errOut, "answered 429 (busy); trying again") {
		t.Errorf("a busy static copy: exit %d\n%s", code, errOut)
	}
}

// TestReportMaxAge: under --max-age, a ledger whose newest entry is older
// is refused, and a recent one is read.
func TestReportMaxAge(t *testing.T) {
	dir, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	age := time.Since(reportDay)
	code, _, errOut := runReport("--ledger", dir, "--verifier-key", m.vkey, "--max-age", (age - time.Hour).String(), "--out", filepath.Join(t.TempDir(), "r"))
	if code == 0 || !strings.Contains(errOut, "older than --max-age") {
		t.Errorf("an old ledger: exit %d\n%s", code, errOut)
	}
	reportOf(t, "--ledger", dir, "--verifier-key", m.vkey, "--max-age", (age + time.Hour).String())
}

// TestReportErrorsSpeakOfTheLedger: a static copy given by its server's
// address, or one behind a redirect, is named in the report's words: no
// --server, no "custodian" for a web server, and what was read.
func TestReportErrorsSpeakOfTheLedger(t *testing.T) {
	_, m := exportedLedger(t, "custodian/court-a", releaseEntry("2026-11"))
	_, srv := staticCopy(t, m)
	redirect := httptest.NewServer(http.RedirectHandler(srv.URL+"/log/checkpoint", http.StatusMovedPermanently))
	defer redirect.Close()
	for _, c := range []struct{ ledger, want string }{
		{srv.URL, "for a static copy, give the URL of its directory, ending in /"},
		{srv.URL + "/", "/v1/tlog/checkpoint"},
		{redirect.URL + "/log/", "which the report does not follow"},
	} {
		code, _, errOut := runReport("--insecure-http", "--ledger", c.ledger, "--verifier-key", m.vkey, "--out", filepath.Join(t.TempDir(), "r"))
		if code == 0 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "--server") || strings.Contains(errOut, "the custodian answered") || strings.Contains(errOut, "warrants") {
			t.Errorf("--ledger %s: exit %d, want %q\n%s", c.ledger, code, c.want, errOut)
		}
	}
}
