package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
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
	remote := remoteLedger{g: g}
	cmd := &cobra.Command{
		Use:   "list [--from N] [--to M]",
		Short: "Print entries N to M, each proven to be in the ledger under a signed checkpoint",
		Long: `List prints the ledger's entries from --from to --to (inclusive; by default
all of them), one line each, or as JSON with --json. Every entry is checked
before it is printed: its inclusion proof against a signed checkpoint that
verifies with the ledger's key (with --server, the key you pin with
--verifier-key). The appliance answers at most 128 entries at once; longer
ranges take several answers, and a checkpoint that grew in between must
prove it extends the one before.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if remote.enabled() {
				src, err := remote.source(cmd.Context())
				if err != nil {
					return err
				}
				return listEntries(g, src, from, to, ledger.MaxRange)
			}
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				if a.SignerErr != nil {
					return keyHint(a.SignerErr)
				}
				return listEntries(g, localRange{a.Ledger, a.VerifierKey}, from, to, ledger.MaxRange)
			})
		},
	}
	cmd.Flags().Int64Var(&from, "from", 0, "first entry index")
	cmd.Flags().Int64Var(&to, "to", -1, "last entry index (default: the newest entry)")
	remote.flags(cmd)
	return cmd
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

// listEntries fetches entries from to to in pages of at most page
// entries, checks each page, and prints them.
func listEntries(g *globals, src rangeSource, from, to, page int64) error {
	signed, err := src.checkpoint()
	if err != nil {
		return err
	}
	ref, err := ledger.VerifyCheckpoint(signed, src.key())
	if err != nil {
		return err
	}
	if to == -1 {
		to = int64(ref.Size) - 1
	}
	if err := ledger.CheckRange(from, to, int64(ref.Size)); err != nil {
		return withHint(err, "choose --from and --to within the ledger; --to defaults to the newest entry")
	}
	var out []listed
	for start := from; start <= to; start += page {
		end := min(start+page-1, to)
		rp, err := src.prove(start, end)
		if err != nil {
			return err
		}
		cp, entries, err := rp.Check(src.key(), start, end)
		if err != nil {
			return fmt.Errorf("the ledger's answer for entries %d to %d does not verify: %w", start, end, err)
		}
		if err := extends(src, ref, cp); err != nil {
			return err
		}
		ref, signed = cp, []byte(rp.Checkpoint)
		for k, e := range entries {
			out = append(out, describe(rp.Entries[k], e))
		}
	}
	return printListed(g, out, ref, signed)
}

// extends checks that newer, the checkpoint of a later page, extends old:
// every entry listed belongs to one history.
func extends(src rangeSource, old, newer *log.Checkpoint) error {
	switch {
	case newer.Size < old.Size:
		return fmt.Errorf("the ledger shrank while it was read: %d entries, then %d", old.Size, newer.Size)
	case newer.Size == old.Size:
		if !bytes.Equal(newer.Hash, old.Hash) {
			return errors.New("two checkpoints of the same size with different root hashes: the ledger was forked; keep both and report it")
		}
		return nil
	}
	proof, err := src.consistency(int64(old.Size), int64(newer.Size))
	if err != nil {
		return err
	}
	if err := ledger.VerifyConsistency(old, newer, proof); err != nil {
		return fmt.Errorf("the ledger is not an extension of the checkpoint read before: %w", err)
	}
	return nil
}

func describe(re ledger.RangeEntry, e *ledger.Entry) listed {
	l := listed{Index: re.Index, Time: e.Time, Kind: e.Kind, Counter: e.Counter, Outcome: e.Outcome,
		Reason: e.Reason, KeyID: e.KeyID, Counts: e.Counts, Entry: re.Entry}
	if e.Commitment != nil {
		l.Commitment = hex.EncodeToString(e.Commitment)
	}
	return l
}

func printListed(g *globals, entries []listed, cp *log.Checkpoint, signed []byte) error {
	if g.json {
		return g.printJSON(map[string]any{
			"origin": cp.Origin, "size": cp.Size, "checkpoint": string(signed), "entries": entries,
		})
	}
	for _, l := range entries {
		g.printf("%s\n", l.line())
	}
	g.printf("%d entries (%d to %d) of %s, each proven in its signed checkpoint (now %d entries)\n",
		len(entries), entries[0].Index, entries[len(entries)-1].Index, cp.Origin, cp.Size)
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

// countsText prints an unverified entry's tally as its entry line does:
// reason=n words in byte order.
func countsText(counts map[string]uint64) string {
	var words []string
	for _, reason := range slices.Sorted(maps.Keys(counts)) {
		words = append(words, fmt.Sprintf("%s=%d", reason, counts[reason]))
	}
	return strings.Join(words, " ")
}
