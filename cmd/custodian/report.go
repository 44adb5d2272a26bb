package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/report"
)

// reportFlags are custodian report's flags.
type reportFlags struct {
	ledgers, keys []string
	out           string
	maxAge        time.Duration
	network       clientTLS
	openings      openingFlags
}

func newReportCommand(g *globals) *cobra.Command {
	var f reportFlags
	cmd := &cobra.Command{
		Use:   "report --ledger SOURCE --verifier-key KEY [--ledger SOURCE --verifier-key KEY ...] [--opening FILE ...] [--roots F --court NAME --crl F] --out DIR",
		Short: "Write a transparency report (a static HTML page, JSON and CSV) from appliances' public ledgers",
		Long: `Report reads one or more appliances' public ledgers, checks every entry, and
writes a transparency report into --out: index.html (charts drawn as SVG with
the table of their numbers beside each, no script, nothing loaded from
elsewhere), report.json, and months.csv, reasons.csv and key-ids.csv with the
same figures: releases and refusals per month and custodian, refusals by
reason, key IDs and the custodians that hold them.

Each --ledger is an appliance's address (its ledger is read from /v1/tlog/),
the URL of a static copy written by ledger export (ending in /), or such a
copy's directory on this machine. Each is read as a C2SP tlog-tiles log and
checked as ledger export and monitor check it: the checkpoint must verify
with the --verifier-key given for it, and every entry must be in the tree
it signs. Nothing unchecked is counted; a ledger that does not check stops
the report, and nothing is written.

Only what the ledgers make public is shown. Commitments stay closed: the
page says which figures (envelopes per warrant, warrants per court) only an
opened commitment holds.

Each --opening is a court's opening of one entry (custodian ledger reveal
wrote it). It is checked as ledger verify-opening checks it, with the
--verifier-key of the --ledger it belongs to (and with --roots, --court and
--crl, against the court as of the entry's time), and its entry must be the
one the report read at that index. The page, report.json and opened.csv list
each opened entry with its warrant's court, docket, serial and signers, and
say what the opening shows. An opening that does not check, of a ledger not
given, past the tree read, or of another entry than the one read stops the
report, and nothing is written.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), g)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.ledgers, "ledger", nil, "an appliance's address, a static copy's URL (ending in /), or a directory written by ledger export; repeat for several")
	fl.StringArrayVar(&f.keys, "verifier-key", nil, "the ledger's pinned checkpoint verifier key, or a file holding it (ledger-key.pub); one per --ledger, in the same order")
	fl.DurationVar(&f.maxAge, "max-age", 0, "refuse a ledger whose newest entry is older than this (e.g. 168h): a mirror may serve an old export; 0 accepts any age")
	fl.StringVar(&f.out, "out", "", "the directory to write index.html, report.json and the CSV files into (created if need be)")
	f.openings.register(fl)
	f.network.register(cmd, false)
	fl.Lookup("insecure-http").Usage = "allow an http:// --ledger (a test daemon, or a static copy on a closed network): nothing is protected on the way"
	for _, name := range []string{"ledger", "verifier-key", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func (f *reportFlags) run(ctx context.Context, g *globals) error {
	// --out is checked before the ledgers are read, which can take long.
	if err := report.CheckOut(f.out); err != nil {
		return withHint(fmt.Errorf("--out %s: %w", f.out, pathError(err)), "choose an --out directory you can write, or a new one")
	}
	r, err := f.build(ctx, g)
	if err != nil {
		return err
	}
	if err := f.write(r); err != nil {
		return err
	}
	g.printf("wrote the transparency report of %s to %s (%s, %s, %s, %s, %s, %s): %s; %s\n",
		plural(len(r.Logs), "ledger", "ledgers"), f.out, report.PageFile, report.JSONFile,
		report.MonthsCSV, report.ReasonsCSV, report.KeyIDsCSV, report.OpenedCSV, r.Totals(), plural(len(r.Opened), "opened entry", "opened entries"))
	return nil
}

// build reads and checks every --ledger and adds up their entries.
func (f *reportFlags) build(ctx context.Context, g *globals) (*report.Report, error) {
	if len(f.ledgers) != len(f.keys) {
		return nil, withHint(fmt.Errorf("%d --ledger and %d --verifier-key: each ledger needs its key", len(f.ledgers), len(f.keys)),
			"give --verifier-key right after each --ledger, in the same order")
	}
	keys := make([]string, len(f.keys))
	for i, k := range f.keys {
		key, err := readKeyArg("verifier-key", k)
		if err == nil {
			err = checkVerifierKey("verifier-key", key)
		}
		if err != nil {
			return nil, err
		}
		keys[i] = key
	}
	openings, err := f.openings.check(g, keys)
	if err != nil {
		return nil, err
	}
	b := report.NewBuilder()
	seen := seenLedgers{}
	for i, raw := range f.ledgers {
		if err := f.read(ctx, g, raw, keys[i], b, seen, openings); err != nil {
			return nil, err
		}
	}
	return b.Report(time.Now()), nil
}

// write writes r into --out.
func (f *reportFlags) write(r *report.Report) error {
	if err := r.Write(f.out); err != nil {
		return withHint(fmt.Errorf("writing the report into %s: %w", f.out, pathError(err)), "choose an --out directory you can write")
	}
	return nil
}

// read checks one --ledger against its key and adds every entry to b,
// and the entries openings open, once each is the entry read.
func (f *reportFlags) read(ctx context.Context, g *globals, raw, key string, b *report.Builder, seen seenLedgers, openings map[string]map[int64]*reportOpening) error {
	src, err := parseLedgerSource(raw)
	if err != nil {
		return err
	}
	c, closeSrc, err := src.client(g, f.network)
	if err != nil {
		return err
	}
	defer closeSrc()
	signed, err := fetchCapped(ctx, c, src.prefix+"checkpoint", ledger.MaxCheckpointSize)
	if derr := dirProblem(raw, err); derr != nil {
		return derr
	}
	if err != nil {
		return withHint(fmt.Errorf("reading the checkpoint of --ledger %s (%s): %w", raw, src.prefix+"checkpoint", err), src.hint()...)
	}
	cp, err := ledger.VerifyCheckpoint(signed, key)
	if err != nil {
		return withHint(fmt.Errorf("--ledger %s: %w", raw, err),
			"check --verifier-key against the appliance's published ledger-key.pub; if it is right, the ledger read is not that appliance's")
	}
	if cp.Size > maxTreeSize {
		return withHint(fmt.Errorf("--ledger %s: its signed checkpoint claims %d entries, more than any ledger holds", raw, cp.Size),
			"a checkpoint signed with the ledger's key never says this: keep it and report it")
	}
	id, err := report.Custodian(cp.Origin)
	if err != nil {
		return withHint(fmt.Errorf("--ledger %s: %w", raw, err), "an appliance's ledger key is named custodian/<its custodian ID>: check that this is an appliance's ledger-key.pub")
	}
	if err := seen.add(raw, id, key); err != nil {
		return err
	}
	tiles := newRemoteTiles(ctx, c, src.prefix, signed, cp)
	if src.dir != "" {
		tiles.source = "the directory"
	}
	var addErr error
	bar := newProgress(g, int(cp.Size))
	bar.unit = "entries of --ledger " + raw
	defer bar.finish()
	err = eachEntry(tiles, int64(cp.Size), func(index int64, entry []byte, e *ledger.Entry) {
		if index%(1<<ledger.TileHeight) == 0 || index == int64(cp.Size)-1 {
			bar.update(int(index+1), 0)
		}
		if addErr == nil {
			addErr = matchOpened(openings[id], raw, index, entry)
		}
		if addErr == nil {
			if addErr = b.Add(id, e); addErr != nil {
				addErr = withHint(fmt.Errorf("--ledger %s: entry %d: %w", raw, index, addErr),
					"a ledger signed with its key never says this: keep the files and report them to the appliance's operator")
			}
		}
	})
	if err != nil {
		return src.tileFailure(raw, err)
	}
	if addErr != nil {
		return addErr
	}
	if err := f.checkAge(raw, b.Newest(id)); err != nil {
		return err
	}
	if err := unread(openings[id], raw, int64(cp.Size)); err != nil {
		return err
	}
	for _, o := range openings[id] {
		b.AddOpened(reportOpened(o.opened))
	}
	b.AddLog(report.Log{Origin: cp.Origin, Source: src.public(raw, id), Size: int64(cp.Size),
		RootHash: base64.StdEncoding.EncodeToString(cp.Hash), VerifierKey: key, Checkpoint: verifiedNote(signed, key)})
	return nil
}

// checkAge refuses, under --max-age, a ledger whose newest entry is older
// than asked: the copy read may be an old export, and the page would
// present it as current.
func (f *reportFlags) checkAge(raw string, newest time.Time) error {
	if f.maxAge <= 0 {
		return nil
	}
	if newest.IsZero() {
		return withHint(fmt.Errorf("--ledger %s has no entry, so its age cannot be checked against --max-age %s", raw, f.maxAge),
			"read the appliance itself, or leave out --max-age for a new ledger")
	}
	if age := time.Since(newest); age > f.maxAge {
		return withHint(fmt.Errorf("--ledger %s: its newest entry is from %s, %s ago, older than --max-age %s", raw, newest.UTC().Format(time.RFC3339), age.Truncate(time.Second), f.maxAge),
			"the copy read may be an old export: read the appliance itself or a fresh export, or raise --max-age if the appliance has been quiet")
	}
	return nil
}

// seenLedger is a ledger already read: two --ledger of one custodian are
// refused, and the message says whether they are the same ledger (the
// same key) or two ledgers that claim one custodian ID.
type seenLedger struct{ raw, key string }

type seenLedgers map[string]seenLedger

func (s seenLedgers) add(raw, id, key string) error {
	first, dup := s[id]
	switch {
	case !dup:
		s[id] = seenLedger{raw, key}
		return nil
	case first.key == key:
		return withHint(fmt.Errorf("--ledger %s and --ledger %s are the same ledger (custodian/%s, the same key)", first.raw, raw, id),
			"give each appliance's ledger once: its entries would be counted twice")
	}
	return withHint(fmt.Errorf("--ledger %s and --ledger %s are two ledgers of custodian %s, signed by different keys", first.raw, raw, id),
		"a replaced or re-enrolled appliance has a new ledger: write a report for each key, or check which key is the custodian's now")
}

// verifiedNote is signed as far as key verified it: the note's text and
// key's signature lines. Lines signed by other keys are dropped: nobody
// checked them, so the page must not show them beside the checked one.
// signed has verified already (ledger.VerifyCheckpoint).
func verifiedNote(signed []byte, key string) string {
	v, err := note.NewVerifier(key)
	if err != nil {
		return ""
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return ""
	}
	var b strings.Builder
	b.WriteString(n.Text)
	b.WriteString("\n")
	for _, sig := range n.Sigs {
		fmt.Fprintf(&b, "\u2014 %s %s\n", sig.Name, sig.Base64)
	}
	return b.String()
}

// eachEntry reads entries 0..size-1 from src's entry bundles, each checked
// against the signed tree (remoteTiles.Tile), and passes each to add.
func eachEntry(src *remoteTiles, size int64, add func(index int64, raw []byte, e *ledger.Entry)) error {
	for first := int64(0); first < size; first += 1 << ledger.TileHeight {
		t := tlog.Tile{H: ledger.TileHeight, L: -1, N: first >> ledger.TileHeight, W: int(min(size-first, 1<<ledger.TileHeight))}
		data, err := src.Tile(t)
		if err != nil {
			return err
		}
		entries, err := ledger.SplitBundle(data, t.W)
		if err != nil {
			return err
		}
		for i, raw := range entries {
			e, err := ledger.ParseEntry(raw)
			if err != nil {
				return withHint(fmt.Errorf("entry %d is in the signed tree but is not a ledger entry: %w", first+int64(i), err),
					"the appliance signed something that is not an entry: keep the files and report it to its operator")
			}
			add(first+int64(i), raw, e)
		}
	}
	return nil
}

// ledgerSource is where one --ledger is read: a server and the log's path
// on it, or an exported directory on this machine.
type ledgerSource struct {
	base   *url.URL // a URL's server (scheme and host)
	prefix string   // and its path
	dir    string   // or a directory
	shown  string   // --ledger as given
}

// reportRetryFor caps how long one request of the report waits on a
// server that answers busy, saying so on stderr at each wait.
const reportRetryFor = 2 * time.Minute

// parseLedgerSource reads --ledger: an http(s) URL (an appliance's
// address, or a static copy's ending in /) or a local directory.
func parseLedgerSource(raw string) (ledgerSource, error) {
	if raw == "" {
		return ledgerSource{}, withHint(errors.New("--ledger is empty"), "give an appliance's address, a static copy's URL or an exported directory")
	}
	if scheme, _, ok := strings.Cut(raw, "://"); ok && !strings.ContainsAny(scheme, "/\\") {
		base, prefix, err := tlogURL("ledger", raw)
		return ledgerSource{base: base, prefix: prefix, shown: raw}, err
	}
	if strings.ContainsRune(raw, 0) {
		return ledgerSource{}, withHint(errors.New("--ledger names no directory"), "give the directory ledger export wrote")
	}
	return ledgerSource{dir: raw, prefix: "/", shown: raw}, nil
}

// client is what reads the source: an API client for a URL; for a
// directory, one whose requests are answered from its files, inside it
// only (an os.Root: no way out by .. or a symbolic link).
func (s ledgerSource) client(g *globals, network clientTLS) (*apiClient, func(), error) {
	if s.base != nil {
		c, err := g.client(s.base, network, ledgerPeer)
		if err != nil {
			return nil, nil, err
		}
		if s.prefix == release.TlogPrefix {
			// An appliance: below its per-client rate, which it shares
			// with other readers. A static copy's web server is not
			// paced; if it answers 429 or 503 with Retry-After, each
			// request waits as asked, for up to reportRetryFor.
			c.pace = newPacer()
		}
		c.retryFor = reportRetryFor
		c.retrying = func(status int, wait time.Duration) {
			fmt.Fprintf(g.stderr, "--ledger %s: the server answered %d (busy); trying again in %s, for up to %s in all\n", s.shown, status, wait, reportRetryFor)
		}
		return c, func() {}, nil
	}
	st, err := os.Stat(s.dir)
	if err == nil && !st.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		return nil, nil, withHint(fmt.Errorf("--ledger %s: %w", s.dir, pathError(err)), "give the directory ledger export wrote (it holds checkpoint and tile/)")
	}
	root, err := os.OpenRoot(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("--ledger %s: %w", s.dir, pathError(err))
	}
	if _, err := root.Stat("checkpoint"); err != nil {
		root.Close()
		return nil, nil, withHint(fmt.Errorf("--ledger %s holds no checkpoint", s.dir), "give the directory ledger export wrote (it holds checkpoint and tile/)")
	}
	c := &apiClient{base: &url.URL{Scheme: "file", Path: "/"}, http: &http.Client{Transport: dirTransport{root}}}
	return c, func() { root.Close() }, nil
}

// dirTransport answers a request with the file it names inside root. Only
// a regular file is read: a named pipe would block the report for ever, a
// device or a directory is no export's. The file is opened without
// blocking and checked once open, so it cannot be swapped in between.
type dirTransport struct{ root *os.Root }

// dirFileError is a file of an exported directory that cannot be read.
type dirFileError struct{ name, problem, hint string }

func (e *dirFileError) Error() string { return e.name + " " + e.problem }

func (t dirTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	name := strings.TrimPrefix(req.URL.Path, "/")
	f, err := t.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, t.openError(name, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = &dirFileError{name, "is not a regular file (a named pipe, a device or a directory)", "put back the file ledger export wrote, or export the ledger again"}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: f, ContentLength: st.Size(), Request: req}, nil
}

// openError says why name could not be opened.
func (t dirTransport) openError(name string, err error) error {
	if st, lerr := t.root.Lstat(name); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
		return &dirFileError{name, "is a symbolic link, which the report does not follow out of the directory", "copy the file itself into the directory, or export the ledger again"}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return &dirFileError{name, "is missing: the export is incomplete", "export the ledger again (custodian ledger export), or copy the whole directory"}
	}
	return &dirFileError{name, "cannot be read: " + pathError(err).Error(), "check the directory's permissions"}
}

// dirProblem is err in a directory's words if a file of it could not be
// read, else nil.
func dirProblem(raw string, err error) error {
	var de *dirFileError
	if !errors.As(err, &de) {
		return nil
	}
	return withHint(fmt.Errorf("--ledger %s: %s", raw, de), de.hint)
}

// tileFailure says why the tiles of raw could not be read: a file of the
// directory, the network, or tiles that do not check against the signed
// checkpoint (the report wrote nothing).
func (s ledgerSource) tileFailure(raw string, err error) error {
	if derr := dirProblem(raw, err); derr != nil {
		return derr
	}
	var fetch *fetchError
	if errors.As(err, &fetch) {
		return withHint(fmt.Errorf("--ledger %s: %w", raw, err), s.hint()...)
	}
	return withHint(fmt.Errorf("--ledger %s: %w", raw, err),
		"nothing was written: keep the files as they are and report them to the appliance's operator; its own copy (custodian ledger export) is the log to publish")
}

// public is how the page names the source: a URL as given (it holds no
// user or password, parseLedgerSource refused those), a directory as an
// exported copy, never its path on this machine.
func (s ledgerSource) public(raw, id string) string {
	if s.dir != "" {
		return "an exported copy of " + id + "'s ledger"
	}
	return raw
}

// hint says what to check when a source's checkpoint cannot be read.
func (s ledgerSource) hint() []string {
	if s.dir != "" {
		return []string{"give the directory ledger export wrote (it holds checkpoint and tile/)"}
	}
	hints := []string{"check the address, that the appliance or web server is up, and the network"}
	if s.prefix == release.TlogPrefix {
		hints = append(hints, "--ledger names no path, so it was read as an appliance's address (its ledger is under "+release.TlogPrefix+
			"); for a static copy, give the URL of its directory, ending in /")
	}
	return hints
}

// pathError is err without the Go wrapping that repeats the path.
func pathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
