package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
)

func newWarrantCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "warrant", Short: "Write, sign, verify and show court warrants"}
	cmd.AddCommand(newWarrantNewCommand(g), newWarrantSignCommand(g), newWarrantVerifyCommand(g), newWarrantShowCommand(g))
	return cmd
}

func newWarrantNewCommand(g *globals) *cobra.Command {
	var w warrant.Warrant
	var recipientFile, out string
	var envelopes []string
	var maxValidity time.Duration
	cmd := &cobra.Command{
		Use:   "new --serial S --docket D --court C --agency A --official O --offence X --target T... --key-id K... [--envelope F.env...] --custodian ID... --recipient agency.pub --not-before TIME --not-after TIME --out w.json",
		Short: "Write a warrant document for a judge to sign",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || recipientFile == "" {
				return errors.New("--out and --recipient are required")
			}
			pub, err := os.ReadFile(recipientFile)
			if err != nil {
				return withHint(err, "--recipient names the agency.pub file from custodian agency keygen")
			}
			if err := addEnvelopes(&w, envelopes); err != nil {
				return err
			}
			w.Version = 1
			w.Recipient = strings.TrimSuffix(string(pub), "\n")
			data, err := w.Marshal(maxValidity)
			if err != nil {
				return newWarrantRefused(err)
			}
			if err := writeNew(out, data, 0o644); err != nil {
				return err
			}
			g.printf("wrote %s; sign it with custodian warrant sign --in %s\n", out, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&w.Serial, "serial", "", "the court's serial number of the warrant (unique per court)")
	f.StringVar(&w.Docket, "docket", "", "docket or case number")
	f.StringVar(&w.Court, "court", "", "issuing court")
	f.StringVar(&w.Agency, "agency", "", "requesting agency")
	f.StringVar(&w.Official, "official", "", "official of the agency who executes the warrant")
	f.StringVar(&w.Offence, "offence", "", "offence under investigation")
	f.StringArrayVar(&w.Targets, "target", nil, "target the warrant covers (repeat)")
	f.StringArrayVar(&w.KeyIDs, "key-id", nil, "escrow key ID (epoch) to release (repeat)")
	f.StringArrayVar(&envelopes, "envelope", nil, "escrow envelope a scoped release covers, whose seal proof must verify; adds its key ID and target (repeat)")
	f.StringArrayVar(&w.Custodians, "custodian", nil, "custodian appliance ID addressed (repeat)")
	f.StringVar(&recipientFile, "recipient", "", "the agency's public key file (agency.pub)")
	f.StringVar(&w.NotBefore, "not-before", "", "start of validity, RFC 3339")
	f.StringVar(&w.NotAfter, "not-after", "", "end of validity, RFC 3339")
	f.DurationVar(&maxValidity, "max-validity", warrant.DefaultMaxValidity, "longest validity span accepted")
	f.StringVar(&out, "out", "", "new file for the warrant JSON")
	return cmd
}

// newWarrantRefused adds advice on the times to a refusal of them.
func newWarrantRefused(err error) error {
	switch warrant.ReasonOf(err) {
	case warrant.ReasonBadTime, warrant.ReasonBadWindow, warrant.ReasonWindowTooLong:
		return withHint(err, "times are RFC 3339, such as 2026-11-20T09:00:00Z")
	}
	return err
}

// addEnvelopes names each envelope file in w, and its key ID and target
// where --key-id and --target did not.
func addEnvelopes(w *warrant.Warrant, paths []string) error {
	first := make(map[string]string, len(paths)) // key ID and enc → file
	for _, path := range paths {
		ref, err := readEnvelopeRef(path)
		if err != nil {
			return err
		}
		k := ref.KeyID + "\x00" + string(ref.Enc)
		if prev, ok := first[k]; ok {
			return fmt.Errorf("%s: the same envelope as %s", path, prev)
		}
		first[k] = path
		w.Envelopes = append(w.Envelopes, ref)
		if !slices.Contains(w.KeyIDs, ref.KeyID) {
			w.KeyIDs = append(w.KeyIDs, ref.KeyID)
		}
		if !slices.Contains(w.Targets, ref.Target) {
			w.Targets = append(w.Targets, ref.Target)
		}
	}
	return nil
}

// readEnvelopeRef reads an envelope file and checks its seal proof. Its
// errors name the file.
func readEnvelopeRef(path string) (warrant.EnvelopeRef, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return warrant.EnvelopeRef{}, err
	}
	env, err := escrow.ParseEnvelope(data)
	if err != nil {
		return warrant.EnvelopeRef{}, unprovenHint(fmt.Errorf("%s: %w", path, err))
	}
	return env.Ref(), nil
}

type verifyOutput struct {
	Verified     bool               `json:"verified"`
	Addressed    bool               `json:"addressing_checked"`
	Digest       string             `json:"digest"`
	ReplayKey    warrant.ReplayKey  `json:"replay_key"`
	Warrant      *warrant.Warrant   `json:"warrant"`
	Signers      []warrant.Identity `json:"signers"`
	RefusalCode  warrant.Reason     `json:"reason,omitempty"`
	RefusalError string             `json:"error,omitempty"`
}

func newWarrantVerifyCommand(g *globals) *cobra.Command {
	var in, roots, court, custodian string
	var crls, keyIDs []string
	var maxValidity time.Duration
	cmd := &cobra.Command{
		Use:   "verify --in w.p7s [--roots F --court NAME --crl F] [--custodian ID --key-id K...]",
		Short: "Verify a signed warrant against the trust store (or given roots and CRLs)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p7s, err := os.ReadFile(in)
			if err != nil {
				return err
			}
			store, err := verifyStore(g, roots, court, crls)
			if err != nil {
				return err
			}
			v := &warrant.Verifier{Trust: store, CustodianID: custodian, HeldKeyIDs: keyIDs, MaxValidity: maxValidity}
			var res *warrant.Verified
			if custodian != "" || len(keyIDs) != 0 {
				res, err = v.Verify(p7s)
			} else {
				res, err = v.VerifySignatures(p7s)
			}
			if err != nil {
				if g.json {
					g.printJSON(verifyOutput{RefusalCode: warrant.ReasonOf(err), RefusalError: err.Error()})
				}
				return signerHint(fmt.Errorf("warrant refused (%s): %w", warrant.ReasonOf(err), err))
			}
			addressed := custodian != ""
			if g.json {
				return g.printJSON(verifyOutput{Verified: true, Addressed: addressed, Digest: fmt.Sprintf("%x", res.Digest),
					ReplayKey: res.Replay, Warrant: res.Warrant, Signers: res.Signers})
			}
			g.printf("%s", warrant.Summary(res.Warrant, res.Signers))
			g.printf("Replay key: %s\nDigest:     %x\n", res.Replay, res.Digest)
			if !addressed {
				g.printf("VERIFIED (signatures, chain, revocation, policy, window); custodian and key IDs not checked: pass --custodian and --key-id\n")
			} else {
				g.printf("VERIFIED for custodian %s\n", custodian)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "signed warrant (CMS, DER)")
	f.StringVar(&roots, "roots", "", "court root certificates (PEM) to use instead of the trust store")
	f.StringVar(&court, "court", "", "with --roots: the court those roots are pinned for")
	f.StringArrayVar(&crls, "crl", nil, "CRL to use with --roots (repeat)")
	f.StringVar(&custodian, "custodian", "", "check the warrant addresses this custodian ID")
	f.StringArrayVar(&keyIDs, "key-id", nil, "key ID held (repeat); with --custodian")
	f.DurationVar(&maxValidity, "max-validity", warrant.DefaultMaxValidity, "longest validity span accepted")
	cmd.MarkFlagRequired("in")
	return cmd
}

// verifyStore is the data dir's trust store, or an in-memory one made of
// --roots, pinned for --court, and --crl.
func verifyStore(g *globals, roots, court string, crls []string) (*trust.Store, error) {
	if roots == "" {
		if len(crls) != 0 || court != "" {
			return nil, errors.New("--crl and --court need --roots; the trust store has its own CRLs and courts (custodian trust list)")
		}
		return trust.Open(trustDir(g))
	}
	if court == "" {
		return nil, withHint(errors.New("--roots needs --court: a root verifies only the warrants of the court it is pinned for"),
			`add --court "NAME" as the court's warrants write it`)
	}
	data, err := os.ReadFile(roots)
	if err != nil {
		return nil, err
	}
	certs, err := trust.ParseCertificates(data)
	if err != nil {
		return nil, err
	}
	s := trust.New()
	for _, c := range certs {
		if _, err := s.AddRoot(c.Raw, court); err != nil {
			return nil, err
		}
	}
	for _, path := range crls {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if _, err := s.SetCRL(data, time.Now()); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return s, nil
}

func newWarrantShowCommand(g *globals) *cobra.Command {
	var in string
	cmd := &cobra.Command{
		Use:   "show --in w.p7s",
		Short: "Print the summary the court officer sees (no trust decision)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p7s, err := os.ReadFile(in)
			if err != nil {
				return err
			}
			w, signers, err := warrant.Inspect(p7s)
			if err != nil {
				return fmt.Errorf("cannot read warrant (%s): %w", warrant.ReasonOf(err), err)
			}
			if g.json {
				return g.printJSON(map[string]any{"warrant": w, "signers": signers, "trust_checked": false})
			}
			g.printf("%s", warrant.Summary(w, signers))
			g.printf("NOT VERIFIED: signatures match their certificates; trust is checked by custodian warrant verify\n")
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "signed warrant (CMS, DER)")
	cmd.MarkFlagRequired("in")
	return cmd
}
