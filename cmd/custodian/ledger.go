package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/witness"
)

func newLedgerCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "The appliance's public, tamper-evident record of releases and refusals",
	}
	cmd.AddCommand(
		newLedgerInitCommand(g),
		newLedgerCheckpointCommand(g),
		newLedgerVerifyCommand(g),
		newLedgerProveCommand(g),
		newLedgerListCommand(g),
		newLedgerResolveCommand(g),
		newLedgerExportCommand(g),
		newLedgerRevealCommand(g),
		newLedgerVerifyOpeningCommand(g),
	)
	return cmd
}

// withAppliance opens the TPM and the data directory for the duration of
// f. f gets the one TPM connection (swtpm serves one client at a time).
func (g *globals) withAppliance(f func(a *appliance.Appliance, t transport.TPM) error) error {
	t, err := g.openTPM()
	if err != nil {
		return err
	}
	defer t.Close()
	a, err := g.openAppliance(t)
	if err != nil {
		return err
	}
	defer a.Close()
	return f(a, t)
}

// openAppliance opens the data directory, with hints for a device that is
// not set up yet.
func (g *globals) openAppliance(t transport.TPM) (*appliance.Appliance, error) {
	a, err := appliance.Open(g.dataDir, t)
	switch {
	case errors.Is(err, appliance.ErrNotEnrolled):
		return nil, withHint(err, "run custodian enroll first, with the same --data-dir")
	case errors.Is(err, ledger.ErrNoLedger):
		return nil, withHint(err, "run custodian ledger init on the device")
	case errors.Is(err, ledger.ErrInUse):
		return nil, withHint(err, "custodian serve is running with this data directory: read the ledger through it with --server https://… "+
			"(and --verifier-key), or stop the daemon first")
	}
	return a, err
}

func newLedgerInitCommand(g *globals) *cobra.Command {
	var pcrList string
	cmd := &cobra.Command{
		Use:   "init [--pcrs 8,9,11]",
		Short: "Create the ledger and its checkpoint key, sealed to the current PCRs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pcrs, err := parsePCRList(pcrList)
			if err != nil {
				return err
			}
			t, err := g.openTPM()
			if err != nil {
				return err
			}
			defer t.Close()
			a, err := appliance.Init(g.dataDir, t, pcrs, time.Now())
			if err != nil {
				return initHint(err)
			}
			defer a.Close()
			g.printf("ledger created for %s; checkpoint verifier key:\n%s\n", a.ID, a.VerifierKey)
			return nil
		},
	}
	cmd.Flags().StringVar(&pcrList, "pcrs", "8,9,11,12", "PCRs the checkpoint key is sealed to (the image's measured PCRs)")
	return cmd
}

func parsePCRList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, badUsage(fmt.Errorf("--pcrs %q: want a comma-separated list of PCR numbers", s))
		}
		out = append(out, i)
	}
	return out, nil
}

func newLedgerCheckpointCommand(g *globals) *cobra.Command {
	remote := remoteLedger{g: g}
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the current signed checkpoint (C2SP tlog-checkpoint, signed note)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if remote.enabled() {
				signed, _, err := remote.checkpoint(cmd.Context())
				if err != nil {
					return err
				}
				_, err = g.stdout.Write(signed)
				return err
			}
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				if a.SignerErr != nil {
					return keyHint(a.SignerErr)
				}
				signed, err := a.Ledger.Checkpoint()
				if err != nil {
					return err
				}
				_, err = g.stdout.Write(signed)
				return err
			})
		},
	}
	remote.flags(cmd)
	return cmd
}

func newLedgerVerifyCommand(g *globals) *cobra.Command {
	var oldPath, escrowPath string
	remote := remoteLedger{g: g}
	cmd := &cobra.Command{
		Use:   "verify [--old checkpoint.txt] [--escrow escrow-K.pub.json]",
		Short: "Re-check the whole ledger, its TPM counter, and that it only grew since an old checkpoint",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			quorum, err := readQuorum(escrowPath)
			if err != nil {
				return err
			}
			if remote.enabled() {
				// Remotely, only the signed checkpoint and growth can be
				// checked; re-hashing and the TPM counter need the device.
				return remote.verify(cmd.Context(), g, oldPath, quorum)
			}
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				if err := a.Ledger.Verify(); err != nil {
					return err
				}
				if err := a.Ledger.Blocked(); err != nil {
					return blockedHint(err)
				}
				if oldPath != "" {
					if err := checkGrew(a, oldPath); err != nil {
						return err
					}
				}
				signed, err := a.Ledger.Checkpoint()
				if err != nil {
					return err
				}
				cosigned, err := quorum.check(witness.WithCosignatures(a.Dir, signed))
				if err != nil {
					return err
				}
				g.printf("ledger of %s verifies: %d entries, TPM counter and bound state match%s\n", a.ID, a.Ledger.Size(), cosigned)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&oldPath, "old", "", "an earlier signed checkpoint to prove consistency with")
	cmd.Flags().StringVar(&escrowPath, "escrow", "", "an escrow file (escrow-K.pub.json): the checkpoint must be cosigned by the quorum of the witnesses it names")
	remote.flags(cmd)
	return cmd
}

// witnessQuorum is the witness policy an escrow file asks checkpoints to
// meet (quorum 0 without --escrow, or when the file names none).
type witnessQuorum struct{ policy witness.Policy }

func readQuorum(escrowPath string) (witnessQuorum, error) {
	if escrowPath == "" {
		return witnessQuorum{}, nil
	}
	pub, err := readEscrow(escrowPath)
	if err != nil {
		return witnessQuorum{}, err
	}
	return witnessQuorum{pub.WitnessPolicy()}, nil
}

// check refuses a checkpoint without the quorum's cosignatures, and says
// who cosigned it.
func (q witnessQuorum) check(signed []byte) (string, error) {
	if q.policy.Quorum == 0 {
		return "", nil
	}
	_, names, err := witness.VerifyQuorum(signed, q.policy)
	if err != nil {
		return "", withHint(err, "the appliance submits each new checkpoint to its witnesses; if it cannot reach them its newest checkpoint stays uncosigned: try again later, and if it lasts ask its keeper whether the witnesses answer (a witness that refuses has seen another history: see docs/auditor.md)")
	}
	return fmt.Sprintf("; cosigned by %d witnesses (%s), the escrow file's quorum is %d", len(names), strings.Join(names, ", "), q.policy.Quorum), nil
}

// checkGrew proves the ledger now extends the one an old checkpoint saw.
func checkGrew(a *appliance.Appliance, oldPath string) error {
	data, err := os.ReadFile(oldPath)
	if err != nil {
		return err
	}
	old, err := ledger.VerifyCheckpoint(data, a.VerifierKey)
	if err != nil {
		return err
	}
	signed, err := a.Ledger.Checkpoint()
	if err != nil {
		return err
	}
	now, err := ledger.VerifyCheckpoint(signed, a.VerifierKey)
	if err != nil {
		return err
	}
	return extendsHint(ledger.CheckExtends(old, now, a.Ledger.ConsistencyProof))
}

// extendsHint advises on a ledger that does not extend the checkpoint
// given with --old.
func extendsHint(err error) error {
	if !errors.Is(err, ledger.ErrTwoHistories) {
		return err
	}
	return withHint(err, "keep the old checkpoint and the ledger's current one (custodian ledger checkpoint) as evidence and report them to the appliance's operator and the courts")
}

func newLedgerProveCommand(g *globals) *cobra.Command {
	var index int64
	remote := remoteLedger{g: g}
	cmd := &cobra.Command{
		Use:   "prove --index N",
		Short: "Print entry N with its inclusion proof and a signed checkpoint (JSON)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if remote.enabled() {
				inc, err := remote.prove(cmd.Context(), index)
				if err != nil {
					return err
				}
				return json.NewEncoder(g.stdout).Encode(inc)
			}
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				inc, err := a.Ledger.Prove(index)
				if err != nil && (index < 0 || index >= a.Ledger.Size()) {
					return withHint(err, fmt.Sprintf("this ledger holds entries 0 to %d", a.Ledger.Size()-1))
				}
				if err != nil {
					return err
				}
				return json.NewEncoder(g.stdout).Encode(inc)
			})
		},
	}
	cmd.Flags().Int64Var(&index, "index", -1, "entry index")
	_ = cmd.MarkFlagRequired("index")
	remote.flags(cmd)
	return cmd
}

func newLedgerResolveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resolve-rollback",
		Short: "Accept a blocked ledger as it is (logged; no warrant signed before now is accepted again)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				cause := a.Ledger.Blocked()
				i, err := a.Ledger.ResolveRollback(time.Now())
				if err != nil {
					return blockedHint(err)
				}
				g.printf("resolved (%v) in ledger entry %d; warrants signed before now are refused\n", cause, i)
				return nil
			})
		},
	}
}
