package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"
	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
)

func newLedgerListCommand(g *globals) *cobra.Command {
	var from, to int64
	var evidence string
	remote := remoteLedger{g: g}
	cmd := &cobra.Command{
		Use:   "list [--from N] [--to M]",
		Short: "Print entries N to M, each proven to be in the ledger under a signed checkpoint",
		Long: `List prints the ledger's entries from --from to --to (inclusive; by default
from the first to the newest, at most 100000 in one run), one line each, or
as JSON with --json. Every entry is checked before it is printed: its
inclusion proof against a signed checkpoint that verifies with the ledger's
key (with --server, the key you pin with --verifier-key). The appliance
answers at most 128 entries at once; longer ranges take several answers,
each printed once it is checked, and a checkpoint that grew in between must
prove it extends the one before. If it does not, both signed checkpoints
are printed to stderr (and written to --evidence-out): together they prove
the ledger was forked.

On the device, without --server, it reads the data directory; stop custodian
serve first, or read the running appliance with --server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			run := &listRun{g: g, page: ledger.MaxRange, evidence: evidence}
			if remote.enabled() {
				src, err := remote.source(cmd.Context())
				if err != nil {
					return err
				}
				run.src = src
				return run.list(from, to)
			}
			if err := remote.refuseLocal(cmd); err != nil {
				return err
			}
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				if a.SignerErr != nil {
					return keyHint(a.SignerErr)
				}
				run.src = localRange{a.Ledger, a.VerifierKey}
				return run.list(from, to)
			})
		},
	}
	cmd.Flags().Int64Var(&from, "from", 0, "first entry index")
	cmd.Flags().Int64Var(&to, "to", -1, "last entry index (default: the newest entry, at most 100000 entries after --from)")
	cmd.Flags().StringVar(&evidence, "evidence-out", "", "directory to write both signed checkpoints to if the ledger turns out forked")
	remote.flags(cmd)
	return cmd
}

// maxListRun caps the entries one run lists without --to: a ledger (or a
// server that holds the checkpoint key and claims 2^40 entries) must not
// keep the auditor reading forever.
const maxListRun = 100000

// listRun is one ledger list: where entries come from, how many to ask
// for at once, and where fork evidence goes.
type listRun struct {
	g        *globals
	src      rangeSource
	page     int64
	evidence string // --evidence-out, or ""
}

// rangeSource is where listed entries come from: the device's ledger, or
// a running appliance. Nothing it answers is trusted before it verifies
// with key.
type rangeSource interface {
	key() string
	checkpoint() ([]byte, error)
	prove(from, to int64) (*ledger.RangeProof, error)
	consistency(old, size int64) (tlog.TreeProof, error)
}

type localRange struct {
	l  *ledger.Ledger
	vk string
}

func (s localRange) key() string                 { return s.vk }
func (s localRange) checkpoint() ([]byte, error) { return s.l.Checkpoint() }
func (s localRange) prove(from, to int64) (*ledger.RangeProof, error) {
	return s.l.ProveRange(from, to)
}
func (s localRange) consistency(old, size int64) (tlog.TreeProof, error) {
	return s.l.ConsistencyProof(old, size)
}

// listed is one checked entry as --json prints it.
type listed struct {
	Index      int64             `json:"index"`
	Time       time.Time         `json:"time"`
	Kind       ledger.Kind       `json:"kind"`
	Counter    uint64            `json:"counter"`
	Commitment string            `json:"commitment,omitempty"`
	Outcome    string            `json:"outcome"`
	Reason     string            `json:"reason,omitempty"`
	KeyID      string            `json:"key_id,omitempty"`
	Counts     map[string]uint64 `json:"counts,omitempty"`
	Entry      string            `json:"entry"` // the bytes the Merkle tree hashes
}

// list fetches entries from to to in pages, checks each page against a
// signed checkpoint that extends the one before, and prints it at once.
func (l *listRun) list(from, to int64) error {
	signed, err := l.src.checkpoint()
	if err != nil {
		return err
	}
	ref, err := ledger.VerifyCheckpoint(signed, l.src.key())
	if err != nil {
		return err
	}
	if ref.Size > math.MaxInt64 {
		return withHint(fmt.Errorf("the ledger's checkpoint claims %d entries, more than any ledger holds", ref.Size),
			"a checkpoint signed with the ledger's key never says this: keep it and report it")
	}
	size := int64(ref.Size)
	capped := false
	if to == -1 {
		to = size - 1
		if from >= 0 && to-from >= maxListRun {
			to, capped = from+maxListRun-1, true
		}
	}
	if err := ledger.CheckRange(from, to, size); err != nil {
		return withHint(err, "choose --from and --to within the ledger; --to defaults to the newest entry")
	}
	out := newListPrinter(l.g)
	for start := from; ; {
		end := start + min(l.page-1, to-start) // never past to, never overflowing
		rp, err := l.src.prove(start, end)
		if err != nil {
			return err
		}
		cp, entries, err := rp.Check(l.src.key(), start, end)
		if err != nil {
			return withHint(fmt.Errorf("the ledger's answer for entries %d to %d does not verify: %w", start, end, err),
				"the answer does not match a checkpoint signed with the pinned key: keep the output and report it")
		}
		if err := l.extends(ref, signed, cp, []byte(rp.Checkpoint)); err != nil {
			return err
		}
		ref, signed = cp, []byte(rp.Checkpoint)
		for k, e := range entries {
			if err := out.entry(describe(rp.Entries[k], e)); err != nil {
				return err
			}
		}
		if end == to {
			break
		}
		start = end + 1
	}
	if err := out.finish(ref, signed); err != nil {
		return err
	}
	if capped {
		fmt.Fprintf(l.g.stderr, "custodian: listed %s; the ledger has %d: continue with --from %d (or give --to)\n",
			plural(out.n, "entry", "entries"), size, to+1)
	}
	return nil
}

// extends checks that newer, the checkpoint of a later page, extends old:
// every entry listed belongs to one history. If not, both signed
// checkpoints are the evidence, and are kept.
func (l *listRun) extends(old *log.Checkpoint, oldSigned []byte, newer *log.Checkpoint, newerSigned []byte) error {
	err := ledger.CheckExtends(old, newer, l.src.consistency)
	if !errors.Is(err, ledger.ErrTwoHistories) {
		return err
	}
	return l.keepEvidence(err, oldSigned, newerSigned)
}

// keepEvidence prints both signed checkpoints to stderr and, with
// --evidence-out, writes them to new files there: two checkpoints signed
// with the ledger's key that are not one history prove the fork.
func (l *listRun) keepEvidence(cause error, oldSigned, newerSigned []byte) error {
	fmt.Fprintf(l.g.stderr, "custodian: the two signed checkpoints that disagree:\n--- read first\n%s--- read later\n%s---\n", oldSigned, newerSigned)
	if l.evidence == "" {
		return withHint(cause, "keep both checkpoints printed above (or run again with --evidence-out DIR) and report them to the appliance's operator and the courts")
	}
	first, later := filepath.Join(l.evidence, "checkpoint-read-first.txt"), filepath.Join(l.evidence, "checkpoint-read-later.txt")
	for path, data := range map[string][]byte{first: oldSigned, later: newerSigned} {
		if err := writeNew("evidence-out", path, data, 0o644); err != nil {
			return withHint(cause, fmt.Sprintf("the checkpoints are printed above; --evidence-out: %v", err))
		}
	}
	return withHint(cause, fmt.Sprintf("both signed checkpoints are in %s and %s: keep them and report them to the appliance's operator and the courts", first, later))
}

func describe(re ledger.RangeEntry, e *ledger.Entry) listed {
	l := listed{Index: re.Index, Time: e.Time, Kind: e.Kind, Counter: e.Counter, Outcome: e.Outcome,
		Reason: e.Reason, KeyID: e.KeyID, Counts: e.Counts, Entry: re.Entry}
	if e.Commitment != nil {
		l.Commitment = hex.EncodeToString(e.Commitment)
	}
	return l
}

// listPrinter prints checked entries as they come: text lines, or with
// --json one document whose entries are streamed and whose checkpoint
// comes last, once every page is checked.
type listPrinter struct {
	g           *globals
	n           int
	first, last int64
}

func newListPrinter(g *globals) *listPrinter { return &listPrinter{g: g} }

func (p *listPrinter) entry(l listed) error {
	if p.n == 0 {
		p.first = l.Index
	}
	p.last = l.Index
	p.n++
	if p.g.json {
		data, err := json.Marshal(l)
		if err != nil {
			return err
		}
		sep := ",\n  "
		if p.n == 1 {
			sep = "{\"entries\": [\n  "
		}
		p.g.printf("%s%s", sep, data)
		return nil
	}
	p.g.printf("%s\n", l.line())
	return nil
}

func (p *listPrinter) finish(cp *log.Checkpoint, signed []byte) error {
	if p.g.json {
		tail, err := json.Marshal(map[string]any{"origin": cp.Origin, "size": cp.Size, "checkpoint": string(signed)})
		if err != nil {
			return err
		}
		if p.n == 0 {
			p.g.printf("{\"entries\": [")
		}
		p.g.printf("\n], %s\n", tail[1:]) // the checkpoint's fields close the document
		return nil
	}
	p.g.printf("%s (%d to %d) of %s, each proven in its signed checkpoint (now %s)\n",
		plural(p.n, "entry", "entries"), p.first, p.last, cp.Origin, plural64(cp.Size, "entry", "entries"))
	return nil
}

// line is the entry as a person reads it, on one line.
func (l listed) line() string {
	line := fmt.Sprintf("%6d  %s  %-10s  counter %-5d  %-7s", l.Index, l.Time.Format(time.RFC3339), l.Kind, l.Counter, l.Outcome)
	if l.Reason != "" {
		line += "  reason " + l.Reason
	}
	if l.KeyID != "" {
		line += "  key-id " + l.KeyID
	}
	if l.Counts != nil {
		line += "  counts " + countsText(l.Counts)
	}
	if l.Commitment != "" {
		line += "  commitment " + l.Commitment
	}
	return strings.TrimRight(line, " ")
}

func plural(n int, one, many string) string { return plural64(uint64(n), one, many) }

func plural64(n uint64, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// countsText prints an unverified entry's tally as its entry line does:
// reason=n words in byte order.
func countsText(counts map[string]uint64) string {
	var words []string
	for _, reason := range slices.Sorted(maps.Keys(counts)) {
		words = append(words, fmt.Sprintf("%s=%d", reason, counts[reason]))
	}
	return strings.Join(words, " ")
}
