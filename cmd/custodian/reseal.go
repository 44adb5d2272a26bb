package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
)

func newUpdateCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Approve new images (escrow authority) and install them into the inactive slot (device)",
		Long: `The escrow authority's signed approvals of new images (keygen, sign: no new
ceremony needed), and on the device the A/B update: apply writes a new image
into the slot that is not running and reboots into it once (tryboot); commit,
after reseal --finish on the new image, makes it the default.`,
	}
	cmd.AddCommand(newUpdateKeygenCommand(g), newUpdateSignCommand(g), newUpdateApplyCommand(g), newUpdateCommitCommand(g))
	return cmd
}

func newUpdateKeygenCommand(g *globals) *cobra.Command {
	var name, out, pub string
	cmd := &cobra.Command{
		Use:   "keygen --name NAME --out update.key --pub update.pub",
		Short: "Make the authority's update key (pass update.pub to custodian ceremony --update-key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The signed-note format's rule, checked here to say it in
			// these words rather than its library's "malformed verifier id".
			if name == "" || strings.ContainsFunc(name, unicode.IsSpace) || strings.Contains(name, "+") || !utf8.ValidString(name) {
				return withHint(fmt.Errorf("--name %q: a key name is not empty and has no spaces and no '+'", name), "for example --name court-update-2026")
			}
			private, public, err := escrow.NewUpdateKey(name)
			if err != nil {
				return err
			}
			if err := writeNew("out", out, []byte(private+"\n"), 0o600); err != nil {
				return err
			}
			if err := writeNew("pub", pub, []byte(public), 0o644); err != nil {
				return err
			}
			g.printf("update key %s: private in %s (keep offline), public in %s (verifier and approval key)\n", name, out, pub)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "custodian-update", "the key's name (no spaces or '+')")
	f.StringVar(&out, "out", "", "new file for the private key (0600)")
	f.StringVar(&pub, "pub", "", "new file for the public part: the verifier key and the approval key for scoped key IDs")
	_ = cmd.MarkFlagRequired("out")
	_ = cmd.MarkFlagRequired("pub")
	return cmd
}

func newUpdateSignCommand(g *globals) *cobra.Command {
	var keyPath, policyPath, out string
	cmd := &cobra.Command{
		Use:   "sign --key update.key --policy policy.json --out update.note",
		Short: "Approve a new image's policy for resealing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			key, err := os.ReadFile(keyPath)
			if err != nil {
				return err
			}
			// The key is checked first, to name a wrong file as what it is
			// rather than by the note library's "malformed verifier id".
			if _, err := note.NewSigner(strings.TrimSpace(string(key))); err != nil {
				return withHint(fmt.Errorf("--key %s is not an update key (update.key, from custodian update keygen): %s", keyPath,
					looksLike(bytes.TrimLeft(key, " \t\r\n"), "its first line is not a signed-note private key")),
					"--key is the private update.key the escrow authority keeps offline (not update.pub, agency.key or a PEM key)")
			}
			policy, err := readPolicy(policyPath)
			if err != nil {
				return err
			}
			signed, err := escrow.SignUpdate(strings.TrimSpace(string(key)), policy)
			if err != nil {
				return err
			}
			if err := durable.WriteFile(out, signed, 0o644); err != nil {
				return err
			}
			g.printf("update for the policy in %s (security version %d) signed into %s\n", policyPath, policy.SecurityVersion, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyPath, "key", "", "the authority's private update key")
	f.StringVar(&policyPath, "policy", "", "the new image's policy.json")
	f.StringVar(&out, "out", "", "the signed update to write")
	for _, name := range []string{"key", "policy", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func newResealCommand(g *globals) *cobra.Command {
	var updatePath string
	var finish bool
	cmd := &cobra.Command{
		Use:   "reseal --update update.note | --finish",
		Short: "Reseal this device's shares to an approved new image (then reboot and --finish)",
		Long: `On the running, approved image, "reseal --update" opens each share and the
checkpoint key in the TPM and seals them to the new image's PCRs beside the
current ones. After rebooting into the new image, "reseal --finish" promotes
whatever opens there. Both steps are logged in the ledger; a forged update is
refused and logged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (updatePath == "") == !finish {
				return errors.New("give either --update FILE or --finish")
			}
			return g.withAppliance(func(a *appliance.Appliance, t transport.TPM) error {
				if finish {
					promoted, err := a.FinishReseal(t, time.Now())
					if err != nil {
						return withHint(err, "run --finish on the new image, after it booted and measured itself")
					}
					g.printf("promoted: %s\n", strings.Join(promoted, ", "))
					return nil
				}
				update, err := os.ReadFile(updatePath)
				if err != nil {
					return err
				}
				keyIDs, err := a.Reseal(t, update, time.Now())
				if held, _ := a.KeyIDs(); err != nil && len(held) == 0 {
					return withHint(err, "a device without a share stays on its image; provision its bundle first (custodian provision --bundle FILE)")
				}
				if err != nil {
					return err
				}
				g.printf("resealed key IDs %s to the new image; reboot into it, then: custodian reseal --finish\n", strings.Join(keyIDs, ", "))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&updatePath, "update", "", "the authority's signed update")
	cmd.Flags().BoolVar(&finish, "finish", false, "on the new image: promote the resealed shares that open here")
	return cmd
}
