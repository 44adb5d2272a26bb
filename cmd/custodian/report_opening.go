package main

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/report"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// reportOpening is one --opening of custodian report, checked with
// hsm/opening against the verifier key of the --ledger it belongs to; its
// entry must then be the one the report reads at its index.
type reportOpening struct {
	file   string
	raw    string // the entry as the opening proves it
	opened *opening.Opened
	seen   bool // the report read its entry
}

// openingFlags are what report checks each --opening with: the files, and
// the court's roots, as ledger verify-opening takes them.
type openingFlags struct {
	files, crls  []string
	roots, court string
}

func (f *openingFlags) register(fl interface {
	StringArrayVar(*[]string, string, []string, string)
	StringVar(*string, string, string, string)
}) {
	fl.StringArrayVar(&f.files, "opening", nil, "an opening file a court published (custodian ledger reveal wrote it); its entry is listed with its warrant's court, docket and serial; repeat for several")
	fl.StringVar(&f.roots, "roots", "", "with --opening: the courts' root certificates (PEM), to verify each opened warrant against its court as of its entry's time")
	fl.StringVar(&f.court, "court", "", "with --roots: the court those roots are pinned for")
	fl.StringArrayVar(&f.crls, "crl", nil, "with --roots: a court's CRL in force at the entries' times (repeat)")
}

// check reads and checks every --opening against the ledgers' keys, before
// any ledger is read: a wrong opening stops the report early. It returns
// the openings by custodian ID, then by entry index.
func (f *openingFlags) check(g *globals, keys []string) (map[string]map[int64]*reportOpening, error) {
	if err := rootsGiven(f.roots, f.court, f.crls, "the opened warrants"); err != nil {
		return nil, err
	}
	if len(f.files) == 0 && f.roots != "" {
		return nil, withHint(errors.New("--roots checks opened warrants, and no --opening is given"), "add --opening FILE, or leave out --roots, --court and --crl")
	}
	out := map[string]map[int64]*reportOpening{}
	for _, file := range f.files {
		o, err := f.checkOne(g, file, keys)
		if err != nil {
			return nil, err
		}
		id, index := o.opened.Custodian(), o.opened.Index
		if out[id] == nil {
			out[id] = map[int64]*reportOpening{}
		}
		if first := out[id][index]; first != nil {
			return nil, withHint(fmt.Errorf("--opening %s and --opening %s both open entry %d of custodian/%s", first.file, file, index, id),
				"give each opening once: its entry would be listed twice")
		}
		out[id][index] = o
	}
	return out, nil
}

// checkOne checks one --opening against the key of the --ledger whose
// origin its checkpoint names, then, with --roots, against the court.
func (f *openingFlags) checkOne(g *globals, file string, keys []string) (*reportOpening, error) {
	data, err := readCapped(file, opening.MaxSize)
	if err != nil {
		return nil, withHint(fmt.Errorf("--opening %s: %w", file, pathError(err)), "give the opening file custodian ledger reveal wrote")
	}
	o, err := opening.Parse(data)
	if err != nil {
		return nil, withHint(fmt.Errorf("--opening %s: %w", file, err), "--opening is an opening file that custodian ledger reveal wrote")
	}
	key := keyFor(o, keys)
	if key == "" {
		return nil, withHint(fmt.Errorf("--opening %s opens an entry of %s, and no --verifier-key given is that ledger's", file, originOf(o)),
			"add that appliance's --ledger and --verifier-key, or leave out this --opening")
	}
	opened, err := checkOpening(g, o, key, f.roots, f.court, f.crls, "--opening "+file)
	if err != nil {
		return nil, err
	}
	return &reportOpening{file: file, raw: o.Entry, opened: opened}, nil
}

// keyFor is the verifier key, among the ledgers', named as the log the
// opening's checkpoint is of ("" for none). A key's name is its log's
// origin; a checkpoint's first line is its origin.
func keyFor(o *opening.Opening, keys []string) string {
	origin := originOf(o)
	for _, k := range keys {
		if name, _, ok := strings.Cut(k, "+"); ok && name == origin {
			return k
		}
	}
	return ""
}

// originOf is the origin the opening's checkpoint claims, unverified: for
// choosing a key and for messages.
func originOf(o *opening.Opening) string {
	origin, _, _ := strings.Cut(o.Checkpoint, "\n")
	if _, err := report.Custodian(origin); err != nil {
		return "a log that is no appliance's ledger"
	}
	return origin
}

// matchOpened checks the entry the report read at index against the opened
// ones of that ledger, if any: the same bytes, or the report refuses.
func matchOpened(openings map[int64]*reportOpening, raw string, index int64, entry []byte) error {
	o := openings[index]
	if o == nil {
		return nil
	}
	if string(entry) != o.raw {
		return withHint(fmt.Errorf("--opening %s opens entry %d of custodian/%s, and --ledger %s holds another entry at that index, under the same key",
			o.file, index, o.opened.Custodian(), raw),
			"the ledger's key signed two different trees: keep the opening and the ledger's files, and report them to the appliance's operator")
	}
	o.seen = true
	return nil
}

// unread refuses an opening of the ledger raw whose entry is past the tree
// the report read (size entries).
func unread(openings map[int64]*reportOpening, raw string, size int64) error {
	for _, i := range slices.Sorted(maps.Keys(openings)) { // the same file named at every run
		if o := openings[i]; !o.seen {
			return withHint(fmt.Errorf("--opening %s opens entry %d of custodian/%s, and --ledger %s has only %d entries (the opening's checkpoint has %d)",
				o.file, o.opened.Index, o.opened.Custodian(), raw, size, o.opened.TreeSize),
				"the copy read is older than the opening: read the appliance itself or a fresh export")
		}
	}
	return nil
}

// reportOpened is what the page lists of a checked opening.
func reportOpened(o *opening.Opened) report.Opened {
	e, w := o.Entry, o.Warrant
	signers := make([]string, len(o.Signers))
	for i, s := range o.Signers {
		signers[i] = warrant.DisplayName(s.Name)
	}
	r := report.Opened{Custodian: o.Custodian(), Index: o.Index, Time: e.Time.UTC().Format(time.RFC3339), Kind: string(e.Kind),
		Outcome: e.Outcome, Reason: e.Reason, KeyID: e.KeyID, Court: w.Court, Docket: w.Docket, Serial: w.Serial, Signers: signers,
		CourtVerified: o.CourtVerified, Checked: courtChecked(o.CourtVerified), Shows: openingShows(o)}
	if o.EnvelopeList != nil && e.Kind == ledger.KindRelease {
		r.Envelopes = o.EnvelopeList.Count
	}
	return r
}
