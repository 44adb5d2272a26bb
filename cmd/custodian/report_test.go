package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/report"
)

func runReport(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(append([]string{"report"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestReportReadsStaticCopies: the same exported log, read from its
// directory and from a web server's URL, gives the figures its entries
// hold; a hash tile altered on the server stops the report, which then
// writes nothing.
func TestReportReadsStaticCopies(t *testing.T) {
	const n = 600
	m := newMemLog(t, n)
	dir, srv := staticCopy(t, m)
	var releases, refusals uint64
	for i := range int64(n) {
		e, err := ledger.ParseEntry(memEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		switch e.Kind {
		case ledger.KindRelease:
			releases++
		case ledger.KindRefusal:
			refusals++
		}
	}
	for _, source := range [][]string{{"--ledger", dir}, {"--insecure-http", "--ledger", srv.URL + "/log/"}} {
		out := filepath.Join(t.TempDir(), "report")
		code, stdout, errOut := runReport(append(source, "--verifier-key", m.vkey, "--out", out)...)
		if code != 0 {
			t.Fatalf("%q: exit %d\n%s%s", source, code, stdout, errOut)
		}
		var r report.Report
		data, err := os.ReadFile(filepath.Join(out, report.JSONFile))
		if err != nil || json.Unmarshal(data, &r) != nil {
			t.Fatalf("%q: report.json: %v", source, err)
		}
		if len(r.Months) != 1 || r.Months[0].Releases != releases || r.Months[0].Refusals != refusals || r.Logs[0].Size != n {
			t.Errorf("%q: %+v %+v, want %d releases and %d refusals of %d entries", source, r.Months, r.Logs, releases, refusals, n)
		}
	}

	tile := filepath.Join(dir, "tile", "0", "001")
	good, err := os.ReadFile(tile)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[0] ^= 1
	if err := os.WriteFile(tile, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "report")
	code, _, errOut := runReport("--insecure-http", "--ledger", srv.URL+"/log/", "--verifier-key", m.vkey, "--out", out)
	if code == 0 || !strings.Contains(errOut, "hash tiles are not the tree its checkpoint signs") || !strings.Contains(errOut, "nothing was written") {
		t.Errorf("an altered hash tile: exit %d\n%s", code, errOut)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("an altered hash tile: %s was written (%v)", out, err)
	}
}

// TestReportDirectoryStaysInside: a checkpoint that is a symbolic link
// out of the exported directory is not followed.
func TestReportDirectoryStaysInside(t *testing.T) {
	m := newMemLog(t, 3)
	dir, _ := staticCopy(t, m)
	outside := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.WriteFile(outside, m.signed, 0o644); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(dir, "checkpoint")
	if err := os.Remove(cp); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, cp); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runReport("--ledger", dir, "--verifier-key", m.vkey, "--out", filepath.Join(t.TempDir(), "r"))
	if code == 0 || !strings.Contains(errOut, "holds no checkpoint") {
		t.Errorf("a checkpoint linked from outside: exit %d\n%s", code, errOut)
	}
}

// TestReportFlags: bad command lines are refused, each naming its flag.
func TestReportFlags(t *testing.T) {
	m := newMemLog(t, 1)
	out := filepath.Join(t.TempDir(), "r")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ledger", "a", "--ledger", "b", "--verifier-key", m.vkey, "--out", out}, "2 --ledger and 1 --verifier-key"},
		{[]string{"--ledger", "ftp://a/", "--verifier-key", m.vkey, "--out", out}, `bad --ledger "ftp://a/"`},
		{[]string{"--ledger", "https://a/copy", "--verifier-key", m.vkey, "--out", out}, "a static copy's URL ends in /"},
		{[]string{"--ledger", "http://a/", "--verifier-key", m.vkey, "--out", out}, "refusing plain HTTP"},
		{[]string{"--ledger", filepath.Join(out, "none"), "--verifier-key", m.vkey, "--out", out}, "no such file or directory"},
		{[]string{"--ledger", "", "--verifier-key", m.vkey, "--out", out}, "--ledger is empty"},
		{[]string{"--ledger", ".", "--verifier-key", "not a key", "--out", out}, "verifier-key"},
		{[]string{"--ledger", ".", "--verifier-key", m.vkey}, `"out" not set`},
	} {
		code, _, errOut := runReport(c.args...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("%q: exit %d\n%s", c.args, code, errOut)
		}
	}
}

// FuzzParseLedgerSource: any --ledger is refused or read as one server
// and log path, or one directory; never both, never a path that does not
// end in /.
func FuzzParseLedgerSource(f *testing.F) {
	for _, s := range []string{"https://custodian-a:8443", "http://h/log/", "/srv/tiles", "tiles", "ftp://x", "https://h/copy", "c:\\tiles", "://", "https://h/?q", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		src, err := parseLedgerSource(raw)
		if err != nil {
			return
		}
		if !strings.HasPrefix(src.prefix, "/") || !strings.HasSuffix(src.prefix, "/") {
			t.Fatalf("%q: log path %q", raw, src.prefix)
		}
		if (src.dir == "") == (src.base == nil) {
			t.Fatalf("%q: directory %q and server %v", raw, src.dir, src.base)
		}
		if src.dir != "" {
			if src.dir != raw || src.prefix != "/" {
				t.Fatalf("%q: read as directory %q, path %q", raw, src.dir, src.prefix)
			}
			return
		}
		u := src.base
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.User != nil {
			t.Fatalf("%q: server %v", raw, u)
		}
	})
}

// BenchmarkReportFromTiles: 10^5 entries of an exported directory read
// and checked (the baseline: what any reader of the tiles does), and the
// whole report over them: read, checked, added up, written.
func BenchmarkReportFromTiles(b *testing.B) {
	m := newMemLog(b, 100_000)
	dir, _ := staticCopy(b, m)
	src, err := parseLedgerSource(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("read", func(b *testing.B) {
		for b.Loop() {
			c, done, err := src.client(nil, clientTLS{})
			if err != nil {
				b.Fatal(err)
			}
			signed, err := fetchCapped(context.Background(), c, "/checkpoint", ledger.MaxCheckpointSize)
			if err != nil {
				b.Fatal(err)
			}
			cp, err := ledger.VerifyCheckpoint(signed, m.vkey)
			if err != nil {
				b.Fatal(err)
			}
			if err := eachEntry(newRemoteTiles(context.Background(), c, "/", signed, cp), int64(cp.Size), func(int64, []byte, *ledger.Entry) {}); err != nil {
				b.Fatal(err)
			}
			done()
		}
	})
	b.Run("report", func(b *testing.B) {
		for b.Loop() {
			if code, _, errOut := runReport("--ledger", dir, "--verifier-key", m.vkey, "--out", filepath.Join(b.TempDir(), "r")); code != 0 {
				b.Fatal(errOut)
			}
		}
	})
}

// TestReportOpeningOfAnotherEntryIsRefused: an opening whose entry differs
// from the one the report read at its index (the ledger's key signed two
// trees) stops the report, naming both; the same entry is marked read,
// and an opening whose entry was never read is refused as past the copy.
func TestReportOpeningOfAnotherEntryIsRefused(t *testing.T) {
	o := &reportOpening{file: "opening.json", raw: "entry seven\n", opened: &opening.Opened{Origin: "custodian/court-a", Index: 7, TreeSize: 9}}
	openings := map[int64]*reportOpening{7: o}
	err := matchOpened(openings, "https://a.example/", 7, []byte("another entry\n"))
	if err == nil || !strings.Contains(err.Error(), "holds another entry at that index") || !strings.Contains(err.Error(), "opening.json") {
		t.Fatalf("another entry: %v", err)
	}
	if err := unread(openings, "https://a.example/", 7); err == nil || !strings.Contains(err.Error(), "has only 7 entries (the opening's checkpoint has 9)") {
		t.Fatalf("an entry not read: %v", err)
	}
	if err := matchOpened(openings, "https://a.example/", 7, []byte("entry seven\n")); err != nil || !o.seen {
		t.Fatalf("the same entry: %v, read %v", err, o.seen)
	}
	if err := unread(openings, "https://a.example/", 8); err != nil {
		t.Fatalf("an entry read: %v", err)
	}
}
