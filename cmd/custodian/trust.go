package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/trust"
)

func trustDir(g *globals) string { return filepath.Join(g.dataDir, appliance.TrustDir) }

func newTrustCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "trust", Short: "Court trust store: pinned root CAs, CRLs and the approval policy"}
	cmd.AddCommand(newTrustAddRootCommand(g), newTrustSetCRLCommand(g), newTrustListCommand(g), newTrustSetPolicyCommand(g))
	return cmd
}

func newTrustAddRootCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "add-root FILE",
		Short: "Pin a court root CA certificate (PEM or DER)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, data, err := openStoreAndRead(g, args[0])
			if err != nil {
				return err
			}
			var root *x509.Certificate
			err = g.logTrustChange(data, func() (err error) {
				root, err = s.AddRoot(data)
				return err
			})
			if err != nil {
				return err
			}
			sum := sha256.Sum256(root.Raw)
			g.printf("pinned root %s (sha256 %s)\n", root.Subject, hex.EncodeToString(sum[:]))
			return nil
		},
	}
}

func newTrustSetCRLCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "set-crl FILE",
		Short: "Store a CRL after checking its signature (PEM may append the issuing intermediate CA)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, data, err := openStoreAndRead(g, args[0])
			if err != nil {
				return err
			}
			var crl *trust.CRL
			err = g.logTrustChange(data, func() (err error) {
				crl, err = s.SetCRL(data, time.Now())
				return err
			})
			if err != nil {
				return err
			}
			g.printf("stored CRL of %s: %d revoked, next update %s\n", crl.Issuer.Subject,
				len(crl.List.RevokedCertificateEntries), crl.List.NextUpdate.UTC().Format(time.RFC3339))
			return nil
		},
	}
}

func newTrustSetPolicyCommand(g *globals) *cobra.Command {
	var p trust.Policy
	cmd := &cobra.Command{
		Use:   "set-policy --signers N [--policy-oid OID...] [--eku OID...]",
		Short: "Set how many distinct signers a warrant needs and what their certificates must carry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := trust.Open(trustDir(g))
			if err != nil {
				return err
			}
			subject, err := json.Marshal(p)
			if err != nil {
				return err
			}
			if err := g.logTrustChange(subject, func() error { return s.SetPolicy(p) }); err != nil {
				return err
			}
			g.printf("approval policy: %d signer(s)\n", p.Signers)
			return nil
		},
	}
	cmd.Flags().IntVar(&p.Signers, "signers", 1, "distinct signers a warrant needs (2 for a judge plus a second authority)")
	cmd.Flags().StringSliceVar(&p.PolicyOIDs, "policy-oid", nil, "certificate policy OID every signer certificate must carry")
	cmd.Flags().StringSliceVar(&p.EKUs, "eku", nil, "extended key usage OID every signer certificate must carry")
	return cmd
}

// logTrustChange applies a change to the trust store and, on an appliance
// whose ledger exists, records it there in the same step as the ledger
// binds the new store to the TPM: what the appliance trusts is part of its
// public record. A blocked ledger refuses the change.
func (g *globals) logTrustChange(subject []byte, apply func() error) error {
	if _, err := os.Stat(filepath.Join(g.dataDir, ledger.FileName)); err != nil {
		return apply() // before ledger init: setting up; init binds the store
	}
	return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
		return blockedHint(a.ChangeTrust(subject, time.Now(), apply))
	})
}

func openStoreAndRead(g *globals, file string) (*trust.Store, []byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	s, err := trust.Open(trustDir(g))
	if err != nil {
		return nil, nil, withHint(err, "check --data-dir")
	}
	return s, data, nil
}

type trustListing struct {
	Roots  []rootListing `json:"roots"`
	CRLs   []crlListing  `json:"crls"`
	Policy trust.Policy  `json:"policy"`
}

type rootListing struct {
	Subject  string    `json:"subject"`
	SHA256   string    `json:"sha256"`
	NotAfter time.Time `json:"not_after"`
}

type crlListing struct {
	Issuer     string    `json:"issuer"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	Revoked    int       `json:"revoked"`
	Fresh      bool      `json:"fresh"`
}

func newTrustListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "Show the pinned roots, CRLs and approval policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := trust.Open(trustDir(g))
			if err != nil {
				return err
			}
			l := listTrust(s, time.Now())
			if g.json {
				return g.printJSON(l)
			}
			if len(l.Roots) == 0 {
				g.printf("no roots: this store verifies nothing (custodian trust add-root FILE)\n")
			}
			for _, r := range l.Roots {
				g.printf("root  %s  sha256 %s  until %s\n", r.Subject, r.SHA256, r.NotAfter.Format(time.RFC3339))
			}
			for _, c := range l.CRLs {
				state := "fresh"
				if !c.Fresh {
					state = "STALE: warrants under it are refused"
				}
				g.printf("crl   %s  %d revoked  next update %s  %s\n", c.Issuer, c.Revoked, c.NextUpdate.Format(time.RFC3339), state)
			}
			g.printf("policy  %d signer(s)  policy OIDs %v  EKUs %v\n", l.Policy.Signers, l.Policy.PolicyOIDs, l.Policy.EKUs)
			return nil
		},
	}
}

func listTrust(s *trust.Store, now time.Time) trustListing {
	l := trustListing{Roots: []rootListing{}, CRLs: []crlListing{}, Policy: s.Policy()}
	for _, r := range s.Roots() {
		sum := sha256.Sum256(r.Raw)
		l.Roots = append(l.Roots, rootListing{Subject: r.Subject.String(), SHA256: hex.EncodeToString(sum[:]), NotAfter: r.NotAfter.UTC()})
	}
	for _, c := range s.CRLs() {
		l.CRLs = append(l.CRLs, crlListing{
			Issuer: c.Issuer.Subject.String(), ThisUpdate: c.List.ThisUpdate.UTC(), NextUpdate: c.List.NextUpdate.UTC(),
			Revoked: len(c.List.RevokedCertificateEntries), Fresh: c.Fresh(now),
		})
	}
	return l
}
