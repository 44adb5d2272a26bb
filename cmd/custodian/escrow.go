package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/tpm"
)

func newProvisionCommand(g *globals) *cobra.Command {
	var bundlePath string
	cmd := &cobra.Command{
		Use:   "provision --bundle FILE",
		Short: "Store this device's share bundle after checking it opens here and matches the commitments",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The bundle is read and checked before the TPM is opened: a
			// wrong file is named as such, whatever the device's state.
			data, err := readKnownDocument("--bundle", bundlePath, "a share bundle (CUSTODIAN.bundle.json, from custodian ceremony)",
				func(data []byte) ([]byte, error) { _, err := escrow.ParseBundle(data); return data, err })
			if err != nil {
				return err
			}
			return g.withAppliance(func(a *appliance.Appliance, t transport.TPM) error {
				b, err := a.Provision(t, data, time.Now())
				if err != nil {
					return provisionHint(err)
				}
				g.printf("provisioned share %d of key ID %s (%d of %d needed) for %s\n",
					b.Index, b.Escrow.KeyID, b.Escrow.Threshold, len(b.Escrow.Custodians), a.ID)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&bundlePath, "bundle", "", "the bundle from the ceremony for this custodian")
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

func provisionHint(err error) error {
	switch {
	case errors.Is(err, escrow.ErrOtherCustodian), errors.Is(err, escrow.ErrOtherTPM):
		return withHint(err, "each custodian gets its own bundle; check you copied the right file")
	case errors.Is(err, escrow.ErrBadShare):
		return withHint(err, "the bundle does not belong to its escrow file; ask the escrow authority")
	case errors.Is(err, appliance.ErrBundleExists):
		return withHint(err, "a provisioned share is never replaced; a new share comes with a new key ID from a new ceremony")
	case errors.Is(err, tpm.ErrDowngrade):
		return floorHint(err)
	}
	return withHint(err, "the device must run the approved image the ceremony sealed to")
}

func newRecoverCommand(g *globals) *cobra.Command {
	var identityPath, escrowPath, out string
	var releasePaths []string
	cmd := &cobra.Command{
		Use:   "recover --identity agency.key --escrow escrow-K.pub.json --release R1 --release R2 ... --out escrow-K.key",
		Short: "Rebuild an escrow key from released shares (agency)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			id, pub, err := readIdentityAndEscrow(identityPath, escrowPath)
			if err != nil {
				return err
			}
			releases, err := readReleases(releasePaths)
			if err != nil {
				return err
			}
			key, err := escrow.Recover(id, pub, releases)
			var bad *escrow.BadShareError
			if errors.As(err, &bad) && key != nil {
				fmt.Fprintf(g.stderr, "warning: %v\n", bad)
			} else if err != nil {
				return witnessHint(err)
			}
			if err := writeNew("out", out, []byte(key.String()+"\n"), 0o600); err != nil {
				return err
			}
			g.printf("recovered the escrow key of %s from %d releases into %s\n", pub.KeyID, len(releases), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&identityPath, "identity", "", "the agency's identity file (custodian agency keygen)")
	f.StringVar(&escrowPath, "escrow", "", "the escrow file of the key ID")
	f.StringArrayVar(&releasePaths, "release", nil, "a release package (repeat for each custodian)")
	f.StringVar(&out, "out", "", "new file for the recovered key (created 0600)")
	for _, name := range []string{"identity", "escrow", "release", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func readIdentityAndEscrow(identityPath, escrowPath string) (*recipient.Identity, *escrow.Public, error) {
	idData, err := os.ReadFile(identityPath)
	if err != nil {
		return nil, nil, err
	}
	id, err := recipient.ParseIdentity(strings.TrimSpace(string(idData)))
	if err != nil {
		return nil, nil, withHint(fmt.Errorf("--identity %s: %w", identityPath, err),
			"--identity is the private agency.key that custodian agency keygen wrote; agency.pub is the public half that warrants name")
	}
	pub, err := readEscrow(escrowPath)
	return id, pub, err
}

// readEscrow reads the escrow file that --escrow names.
func readEscrow(path string) (*escrow.Public, error) {
	return readKnownDocument("--escrow", path, "an escrow file (escrow-K.pub.json, from custodian ceremony)", escrow.ParsePublic)
}

func newEscrowCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "escrow",
		Short: "Seal messages to an escrow key, and open them with a recovered one",
	}
	cmd.AddCommand(newEscrowSealCommand(g), newEscrowOpenCommand(g))
	return cmd
}

func newEscrowSealCommand(g *globals) *cobra.Command {
	var escrowPath, target, in, out string
	cmd := &cobra.Command{
		Use:   "seal --escrow escrow-K.pub.json --target T --in F --out F.env",
		Short: "Seal a file to the escrow key of a key ID, for a target, with the proof that the sealer drew its key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := readEscrow(escrowPath)
			if err != nil {
				return err
			}
			plaintext, err := os.ReadFile(in)
			if err != nil {
				return err
			}
			env, err := escrow.Seal(pub, target, plaintext)
			if err != nil {
				return err
			}
			if err := durable.WriteFile(out, env, 0o644); err != nil {
				return err
			}
			g.printf("sealed %s for target %q under key ID %s into %s\n", in, target, pub.KeyID, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&escrowPath, "escrow", "", "the escrow file of the key ID")
	f.StringVar(&target, "target", "", "who or what the message concerns (bound into the envelope)")
	f.StringVar(&in, "in", "", "file to seal")
	f.StringVar(&out, "out", "", "envelope to write")
	for _, name := range []string{"escrow", "target", "in", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func newEscrowOpenCommand(g *globals) *cobra.Command {
	var keyPath, identityPath, escrowPath, inDir, out, outDir string
	var ins, releasePaths []string
	var workers int
	cmd := &cobra.Command{
		Use: "open (--key escrow-K.key | --identity agency.key --escrow escrow-K.pub.json --release R1 --release R2 ...) " +
			"(--in F.env --out F | --in F.env... --in-dir DIR --out-dir DIR)",
		Short: "Open envelopes with a recovered escrow key, or with scoped releases",
		Long: `With --key, open envelopes of a share-mode key ID with the key custodian
recover rebuilt. With --identity, --escrow and --release, open envelopes of a
scoped key ID from the custodians' release packages: each custodian's batch of
partial decryptions is checked once against its one proof (each partial
against its own in a version 1 package), a custodian whose batch fails is named
and left out, and t valid partials open each envelope. Only envelopes the warrant
named can be opened this way.

--in F.env --out F opens one envelope. --out-dir DIR opens every envelope
given with --in (repeatable) and every *.env file in --in-dir, on all CPUs
(--workers), into DIR (new or empty), one file per envelope named after it
without ".env". Each envelope that does not open is named with its reason and
the others still open; the exit status is non-zero when any did not. The
outcomes come in the order given (--in-dir's files sorted by name), and with
--json as one JSON report at the end. On a terminal a progress bar shows on
stderr, otherwise a line every few seconds.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			files, err := envelopeFiles(ins, inDir, out, outDir)
			if err != nil {
				return err
			}
			o, err := newEnvelopeOpener(keyPath, identityPath, escrowPath, releasePaths)
			if err != nil {
				return err
			}
			if outDir != "" {
				return openEnvelopes(g, o, files, outDir, workers)
			}
			return openEnvelope(g, o, files[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyPath, "key", "", "the recovered escrow key file (share mode)")
	f.StringVar(&identityPath, "identity", "", "the agency's identity file (scoped mode)")
	f.StringVar(&escrowPath, "escrow", "", "the escrow file of the key ID (scoped mode)")
	f.StringArrayVar(&releasePaths, "release", nil, "a release package of a scoped key ID (repeat for each custodian)")
	f.StringArrayVar(&ins, "in", nil, "envelope to open (repeat with --out-dir)")
	f.StringVar(&inDir, "in-dir", "", "directory whose *.env files to open (with --out-dir)")
	f.StringVar(&out, "out", "", "new file for the plaintext of the one envelope")
	f.StringVar(&outDir, "out-dir", "", "new or empty directory for the plaintexts of many envelopes")
	f.IntVar(&workers, "workers", 0, "envelopes opened at once with --out-dir (default: one per CPU)")
	return cmd
}

// envelopeOpener opens envelopes of one key ID, with a key or releases.
type envelopeOpener struct {
	open  escrow.Opener
	keyID string
	// packages names the custodians whose release gave no partial at all.
	packages *escrow.BadShareError
}

func newEnvelopeOpener(keyPath, identityPath, escrowPath string, releasePaths []string) (*envelopeOpener, error) {
	switch {
	case keyPath != "" && len(releasePaths) == 0:
		keyData, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, err
		}
		key, err := escrow.ParseKey(string(keyData))
		if err != nil {
			return nil, withHint(fmt.Errorf("--key %s is not an escrow key file (from custodian recover): %s", keyPath, looksLike(bytes.TrimLeft(keyData, " \t\r\n"), "its text is not one")),
				"for a share-mode key ID, --key is the key file custodian recover wrote; an agency identity (agency.key) goes with --identity, --escrow and --release")
		}
		return &envelopeOpener{keyID: key.KeyID(), open: key}, nil
	case keyPath == "" && len(releasePaths) > 0:
		id, pub, err := readIdentityAndEscrow(identityPath, escrowPath)
		if err != nil {
			return nil, err
		}
		releases, err := readReleases(releasePaths)
		if err != nil {
			return nil, err
		}
		o, err := escrow.NewScopedOpener(id, pub, releases)
		if err != nil {
			return nil, witnessHint(err)
		}
		return &envelopeOpener{keyID: pub.KeyID, open: o, packages: o.PackageErrors()}, nil
	}
	return nil, withHint(errors.New("give either --key or --release"), "--key for a share-mode key ID (after custodian recover); --identity, --escrow and --release for a scoped one")
}

// openEnvelope opens one envelope into a new file.
func openEnvelope(g *globals, o *envelopeOpener, f envelopeFile) error {
	data, err := os.ReadFile(f.in)
	if err != nil {
		return err
	}
	env, plaintext, err := o.open.Open(data)
	var bad *escrow.BadShareError
	if errors.As(err, &bad) && plaintext != nil {
		fmt.Fprintf(g.stderr, "warning: %v\n", bad)
	} else if err != nil {
		return envelopeHint(fmt.Errorf("%s: %w", f.in, err))
	}
	if err := writeNew(f.outFlag, f.out, plaintext, 0o600); err != nil {
		return err
	}
	g.printf("opened the envelope for target %q (key ID %s) into %s\n", env.Target, env.KeyID, f.out)
	return nil
}

// envelopeHint explains why an envelope did not open.
func envelopeHint(err error) error {
	if errors.Is(err, escrow.ErrNotEscrowEnvelope) {
		return withHint(err, "--in takes escrow envelopes (F.env, from custodian escrow seal or the messaging provider)")
	}
	if errors.Is(err, escrow.ErrNotEnoughShares) {
		return withHint(err, "a scoped release opens only the envelopes its warrant named, and needs the threshold of custodians")
	}
	return unprovenHint(err)
}

// unprovenHint explains a refusal for a missing or failed seal proof.
func unprovenHint(err error) error {
	if !errors.Is(err, escrow.ErrUnproven) {
		return err
	}
	return withHint(err, "scoped mode works only on envelopes that prove their sealer drew their key: without the proof, one envelope can be dressed up as another",
		"a version 1 envelope has no proof: ask its sealer to seal the message again with this version; otherwise take the envelope from the messaging provider as it was sealed")
}

func readReleases(paths []string) ([]*escrow.Release, error) {
	var releases []*escrow.Release
	for _, p := range paths {
		r, err := readKnownDocument("--release", p, "a release package (from custodian release)", escrow.ParseRelease)
		if err != nil {
			return nil, err
		}
		releases = append(releases, r)
	}
	return releases, nil
}

// witnessHint explains a package refused for want of the witness quorum.
func witnessHint(err error) error {
	if !errors.Is(err, escrow.ErrNotWitnessed) {
		return err
	}
	return withHint(err, "the escrow file asks for a checkpoint its witnesses cosigned: take the package as the custodian's appliance served it (custodian release --out), not a copy with lines removed",
		"if the appliance's own package lacks it, its release did not wait for the witnesses: tell the custodian's keeper and the escrow authority")
}
