package main

import (
	"errors"
	"sort"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/tpm"
)

func newFloorCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "floor",
		Short: "The TPM's security version floor: images below it open nothing",
		Long: `Every share, scoped key and the checkpoint key carries the security version of
the image it was sealed or approved for, and the TPM opens it only while its
floor (an NV counter that only rises) is at most that version. Raising the
floor after an update locks out every older image, including ones with known
flaws that the authority approved in the past.`,
	}
	cmd.AddCommand(newFloorShowCommand(g), newFloorRaiseCommand(g))
	return cmd
}

func newFloorShowCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Print the floor and the security version of each key this device holds",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withAppliance(func(a *appliance.Appliance, t transport.TPM) error {
				s, err := a.FloorStatus(t)
				if err != nil {
					return floorHint(err)
				}
				if g.json {
					return g.printJSON(s)
				}
				g.printf("floor: %d\n", s.Floor)
				g.printf("checkpoint key: version %d%s\n", s.LedgerKey, below(s.LedgerKey, s.Floor))
				keyIDs := make([]string, 0, len(s.Bundles))
				for k := range s.Bundles {
					keyIDs = append(keyIDs, k)
				}
				sort.Strings(keyIDs)
				for _, k := range keyIDs {
					g.printf("key ID %s: version %d%s\n", k, s.Bundles[k], below(s.Bundles[k], s.Floor))
				}
				return nil
			})
		},
	}
}

func below(v, floor uint64) string {
	if v < floor {
		return " (below the floor: does not open)"
	}
	return ""
}

func newFloorRaiseCommand(g *globals) *cobra.Command {
	var to uint64
	cmd := &cobra.Command{
		Use:   "raise [--to N]",
		Short: "Raise the floor to the running image's security version (never lowers it)",
		Long: `On a newer approved image, after "custodian reseal --finish", raise opens every
provisioned share and the checkpoint key; if all open, it logs a floor entry
in the ledger and raises the TPM's floor to the running image's security
version (or to --to, which may not be above it). Older images then open
nothing on this device. The floor never goes down: a lower --to is refused.
Run it once the new image has proven itself; until then the previous image
can still be booted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withAppliance(func(a *appliance.Appliance, t transport.TPM) error {
				from, raised, err := a.RaiseFloor(t, to, time.Now())
				if err != nil {
					return floorHint(err)
				}
				if g.json {
					return g.printJSON(map[string]uint64{"from": from, "floor": raised})
				}
				if raised == from {
					g.printf("floor stays %d: it is already there\n", from)
					return nil
				}
				g.printf("floor raised from %d to %d; images of a lower security version open nothing here\n", from, raised)
				return nil
			})
		},
	}
	cmd.Flags().Uint64Var(&to, "to", 0, "the floor to raise to (default: the running image's security version)")
	return cmd
}

// floorHint says what to do about a floor refusal.
func floorHint(err error) error {
	switch {
	case errors.Is(err, appliance.ErrFloorAboveImage):
		return withHint(err, "boot the newer image (and reseal --finish) before raising the floor to its version")
	case errors.Is(err, appliance.ErrFloorLower):
		return withHint(err, "the floor never goes down; boot an image whose security version is at least the floor")
	case errors.Is(err, tpm.ErrDowngrade):
		return withHint(err, "this image is older than the device's floor allows; boot an image of at least the floor's version")
	case errors.Is(err, appliance.ErrFloorNotOpen):
		return withHint(err, "run floor raise on the approved image after custodian reseal --finish, when every share opens")
	case errors.Is(err, tpm.ErrNoFloor):
		return withHint(err, "the TPM lost its floor (cleared?); enroll the device again")
	}
	return err
}
