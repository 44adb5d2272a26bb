package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/recipient"
)

func newAgencyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "agency", Short: "Requesting agency tools: the recipient key that released shares are sealed to"}
	cmd.AddCommand(newAgencyKeygenCommand(g))
	return cmd
}

func newAgencyKeygenCommand(g *globals) *cobra.Command {
	var out, pub, kem string
	cmd := &cobra.Command{
		Use:   "keygen --out agency.key --pub agency.pub",
		Short: "Make the agency's HPKE recipient key pair (ML-KEM-768+X25519 by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || pub == "" {
				return withHint(errors.New("--out and --pub are required"), "custodian agency keygen --out agency.key --pub agency.pub")
			}
			if err := mustNotExist("pub", pub); err != nil {
				return err
			}
			id, err := recipient.Generate(kem)
			if err != nil {
				return err
			}
			// 0600 and O_EXCL: an agency key lost to a typo would make every
			// share sealed to it unrecoverable.
			if err := writeNew("out", out, []byte(id.String()+"\n"), 0o600); err != nil {
				return err
			}
			line := id.Public().String()
			if err := writeNew("pub", pub, []byte(line+"\n"), 0o644); err != nil {
				return err
			}
			fp := id.Public().Fingerprint()
			rows := id.Public().FingerprintRows()
			if g.json {
				return g.printJSON(map[string]string{"recipient": line, "fingerprint": fp, "identity_file": out, "public_file": pub})
			}
			// The judge compares the fingerprint with the one warrant new
			// and warrant show print for the recipient, in the same two
			// rows of eight groups, to be read aloud group by group.
			g.printf("%s\nfingerprint %s\n            %s\n", line, rows[0], rows[1])
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "new file for the private key (created 0600, never overwritten)")
	cmd.Flags().StringVar(&pub, "pub", "", "new file for the one-line public key, which warrants name as recipient")
	cmd.Flags().StringVar(&kem, "kem", recipient.DefaultKEM, "HPKE KEM: mlkem768x25519, mlkem768p256 or x25519")
	return cmd
}
