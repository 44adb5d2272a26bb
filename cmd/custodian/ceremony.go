package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/witness"
	"github.com/custodian-project/custodian/tpm"
)

func newCeremonyCommand(g *globals) *cobra.Command {
	var keyID, policyPath, out, updateKeyPath, mode string
	var threshold int
	var enrollments []string
	var checks enrollmentChecks
	var witnessKeys, witnessURLs []string
	var witnessQuorum int
	cmd := &cobra.Command{
		Use:   "ceremony --key-id K --threshold T --policy policy.json --enrollment E1 --enrollment E2 ... [--mode share|scoped] [--witness-key VKEY --witness-url URL ... --witness-quorum K] --out DIR",
		Short: "Make the escrow key of a key ID and seal one share to each enrolled custodian (offline)",
		Long: `The ceremony runs on the escrow authority's offline workstation. It verifies
each enrollment, makes a P-256 escrow key, splits it so that THRESHOLD shares
recover it (Feldman commitments), and seals each share to one custodian's TPM
and the policy's PCR values. The key and the shares exist only in memory.

--mode share seals each share as data the device opens to release it: an
agency that recovers t shares holds the key ID's whole escrow key.
--mode scoped seals each share as a TPM key that never leaves the TPM: a
release is a partial decryption of each envelope the warrant names, so a
warrant opens those envelopes and no other.

--witness-key and --witness-url name witnesses (C2SP tlog-witness) that
cosign the custodians' ledger checkpoints, and --witness-quorum how many must
cosign the checkpoint of a release before it leaves the device and before the
agency accepts it; see docs/escrow-authority.md, "Witnesses".

--update-key lets the custodians follow the images the authority approves
(custodian reseal --update): share-mode shares are resealed to each; scoped
keys never leave the TPM and are never resealed, but their policy accepts the
authority's signed approval of the new image, which reseal stores. Without --update-key, a key ID works only on the image of --policy; see
docs/escrow.md, "Image updates".

It writes DIR/escrow-K.pub.json (public) and DIR/<custodian>.bundle.json
(one per custodian, for custodian provision).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			witnessed, err := witnessOption(cmd, witnessKeys, witnessURLs, witnessQuorum)
			if err != nil {
				return err
			}
			policy, err := readPolicy(policyPath)
			if err != nil {
				return err
			}
			var members []escrow.Member
			for _, path := range enrollments {
				m, err := ceremonyMember(path, &checks)
				if err != nil {
					return err
				}
				members = append(members, m)
			}
			if mode != escrow.ModeShare && mode != escrow.ModeScoped {
				return withHint(fmt.Errorf("--mode %q", mode), "the mode is share or scoped")
			}
			opts := []escrow.Option{escrow.WithMode(mode), escrow.WithSecurityVersion(policy.SecurityVersion)}
			if mode == escrow.ModeScoped && updateKeyPath == "" {
				fmt.Fprintf(g.stderr, "warning: no --update-key: the scoped keys of %s will work only on the image of %s\n", keyID, policyPath)
			}
			if updateKeyPath != "" {
				key, err := os.ReadFile(updateKeyPath)
				if err != nil {
					return err
				}
				verifier, approvalKey, err := escrow.ParseUpdatePublic(string(key))
				if err != nil {
					return withHint(fmt.Errorf("%s: %w", updateKeyPath, err), "--update-key takes the update.pub that custodian update keygen wrote")
				}
				opts = append(opts, escrow.WithUpdateKey(verifier, approvalKey))
			}
			if witnessed != nil {
				opts = append(opts, witnessed)
			}
			pub, bundles, err := escrow.Ceremony(keyID, threshold, policy.PCRs, members, opts...)
			if err != nil {
				return err
			}
			if err := writeCeremony(out, pub, bundles); err != nil {
				return err
			}
			g.printf("escrow key %s (%s mode): %d of %d shares needed; wrote %s and %d bundles\n",
				keyID, mode, threshold, len(members), filepath.Join(out, escrowFileName(keyID)), len(bundles))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyID, "key-id", "", "the key ID (epoch), e.g. 2026-11")
	f.IntVar(&threshold, "threshold", 0, "shares needed to recover the key (2 to the number of custodians)")
	f.StringVar(&policyPath, "policy", "", "policy.json the shares are sealed to (custodian image measure)")
	f.StringArrayVar(&enrollments, "enrollment", nil, "a custodian's verified enrollment (repeat for each)")
	f.StringVar(&out, "out", "", "directory for the escrow file and the bundles (created; must be new or empty)")
	f.StringVar(&mode, "mode", escrow.DefaultMode, "share (a release hands out the share) or scoped (a release opens only the envelopes the warrant names)")
	f.StringVar(&updateKeyPath, "update-key", "", "the authority's update.pub (custodian update keygen): lets custodians follow approved images (share mode: reseal; scoped mode: the TPM accepts signed approvals)")
	f.StringArrayVar(&witnessKeys, "witness-key", nil, "a witness's cosignature verifier key (C2SP tlog-witness, e.g. the vkey litewitness prints); repeat for each, with --witness-url")
	f.StringArrayVar(&witnessURLs, "witness-url", nil, "where custodians submit checkpoints to that witness; one per --witness-key, in the same order")
	f.IntVar(&witnessQuorum, "witness-quorum", 0, "how many of the witnesses must cosign a release's checkpoint before it leaves (required with --witness-key; 0: submitted, not waited for)")
	checks.register(cmd)
	for _, name := range []string{"key-id", "threshold", "policy", "enrollment", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func escrowFileName(keyID string) string { return "escrow-" + keyID + ".pub.json" }

func ceremonyMember(path string, checks *enrollmentChecks) (escrow.Member, error) {
	e, err := readEnrollment("--enrollment", path)
	if err != nil {
		return escrow.Member{}, fmt.Errorf("%s: %w", path, err)
	}
	v, err := checks.verify(e)
	if err != nil {
		return escrow.Member{}, err
	}
	return escrow.Member{ID: e.CustodianID, EK: v.EK, ImportKey: v.ImportKey}, nil
}

// readPolicy reads the policy.json that --policy names.
func readPolicy(path string) (*bootpolicy.Policy, error) {
	return readKnownDocument("--policy", path, "a boot policy (policy.json, from custodian image measure)", bootpolicy.Parse)
}

// writeCeremony writes the outputs into a new or empty directory, so a
// ceremony never mixes its bundles with another one's.
func writeCeremony(dir string, pub *escrow.Public, bundles []*escrow.Bundle) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) > 0 {
		return withHint(fmt.Errorf("%s is not an empty directory", dir), "give each ceremony a new --out directory")
	}
	data, err := pub.Marshal()
	if err != nil {
		return err
	}
	if err := durable.CreateFile(filepath.Join(dir, escrowFileName(pub.KeyID)), data, 0o644); err != nil {
		return err
	}
	for _, b := range bundles {
		data, err := b.Marshal()
		if err != nil {
			return err
		}
		if err := durable.CreateFile(filepath.Join(dir, b.CustodianID+".bundle.json"), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func newPolicyCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Boot policies (policy.json) the shares are sealed to",
	}
	cmd.AddCommand(newPolicyFromEnrollmentCommand(g))
	return cmd
}

func newPolicyFromEnrollmentCommand(g *globals) *cobra.Command {
	var in, pcrList, out string
	var securityVersion uint64
	var checks enrollmentChecks
	cmd := &cobra.Command{
		Use:   "from-enrollment --in enrollment.json --pcrs 8,9,11,12 --security-version N --out policy.json",
		Short: "Record a policy from the PCRs a verified enrollment quoted",
		Long: `Without an image prediction, a policy can pin the PCR values a device
measured when it enrolled, as its verified quote proves them. The policy says
so ("source": "enrollment:<ID>") and carries no event log; the security version
of the image the device runs is stated with --security-version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			indices, err := parsePCRList(pcrList)
			if err != nil {
				return err
			}
			e, err := readEnrollment("--in", in)
			if err != nil {
				return err
			}
			if _, err := checks.verify(e); err != nil {
				return err
			}
			pcrs := tpm.PCRValues{}
			for _, i := range indices {
				v, ok := e.PCRs[i]
				if !ok {
					return fmt.Errorf("the enrollment did not quote PCR %d", i)
				}
				pcrs[i] = v
			}
			p, err := bootpolicy.FromMeasurement(e.CustodianID, pcrs, securityVersion)
			if err != nil {
				return err
			}
			data, err := p.Marshal()
			if err != nil {
				return err
			}
			if err := durable.WriteFile(out, data, 0o644); err != nil {
				return err
			}
			g.printf("policy of PCRs %s as measured by %s written to %s\n", pcrList, e.CustodianID, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "the device's enrollment")
	f.StringVar(&pcrList, "pcrs", "8,9,11,12", "PCRs to pin (8, 9 or 11-15)")
	f.Uint64Var(&securityVersion, "security-version", 0, "the security version of the image the device runs (its manifest's security_version)")
	_ = cmd.MarkFlagRequired("security-version")
	f.StringVar(&out, "out", "", "policy file to write")
	checks.register(cmd)
	_ = cmd.MarkFlagRequired("in")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

// witnessOption pairs the witness flags into the ceremony's option, or
// nil without witnesses. The quorum must be stated: never a silent 0.
func witnessOption(cmd *cobra.Command, keys, urls []string, quorum int) (escrow.Option, error) {
	quorumSet := cmd.Flags().Changed("witness-quorum")
	switch {
	case len(keys) != len(urls):
		return nil, withHint(fmt.Errorf("%d --witness-key and %d --witness-url: each witness needs both", len(keys), len(urls)),
			"give --witness-url right after each --witness-key, in the same order")
	case len(keys) == 0 && quorumSet && quorum != 0:
		return nil, withHint(fmt.Errorf("--witness-quorum %d without witnesses", quorum), "name the witnesses with --witness-key and --witness-url")
	case len(keys) == 0:
		return nil, nil
	case !quorumSet:
		return nil, withHint(errors.New("witnesses without --witness-quorum"), "say how many of them must cosign a release's checkpoint (0 to submit without waiting)")
	}
	ws := make([]witness.Witness, len(keys))
	for i := range keys {
		ws[i] = witness.Witness{Key: keys[i], URL: urls[i]}
	}
	if err := (witness.Policy{Witnesses: ws, Quorum: quorum}).Check(); err != nil {
		return nil, withHint(err, "--witness-key takes the witness's cosignature verifier key as it publishes it (litewitness prints it as vkey), --witness-url its http(s) address, and --witness-quorum 0 to the number of witnesses")
	}
	return escrow.WithWitnesses(ws, quorum), nil
}
