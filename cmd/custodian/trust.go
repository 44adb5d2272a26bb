package main

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/trust"
	"github.com/custodian-project/custodian/hsm/warrant"
)

func trustDir(g *globals) string { return filepath.Join(g.dataDir, appliance.TrustDir) }

func newTrustCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "trust", Short: "Court trust store: pinned root CAs, CRLs and the approval policy"}
	cmd.AddCommand(newTrustAddRootCommand(g), newTrustSetCRLCommand(g), newTrustListCommand(g), newTrustSetPolicyCommand(g))
	return cmd
}

func newTrustAddRootCommand(g *globals) *cobra.Command {
	var court string
	cmd := &cobra.Command{
		Use:   "add-root FILE --court NAME",
		Short: "Pin a court root CA certificate (PEM or DER) for the court whose warrants it signs",
		Long: "Pin a court root CA certificate for one court. A warrant is accepted only when its \"court\" field is\n" +
			"exactly the court its signers' root is pinned for, so write NAME as the court's warrants write it.\n" +
			"A root key belongs to one court and a court has one root key.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := warrant.CheckCourtName(court); err != nil {
				return withHint(fmt.Errorf("--court: %w", err), `give the court's name exactly as its warrants write it, e.g. --court "District Court of Testing"`)
			}
			s, data, err := openStoreAndRead(g, args[0], "CERTIFICATE", "the court's root CA certificate (PEM or DER)")
			if err != nil {
				return err
			}
			var root *x509.Certificate
			subject, err := json.Marshal(struct {
				Court string `json:"court"`
				Root  []byte `json:"root"`
			}{court, data})
			if err != nil {
				return err
			}
			err = g.logTrustChange(subject, func() (err error) {
				root, err = s.AddRoot(data, court)
				return err
			})
			if err != nil {
				return err
			}
			g.printf("pinned root %s for court %q\n  %s\n", warrant.DisplayName(root.Subject.String()), court, certfile.Fingerprints(root))
			return nil
		},
	}
	cmd.Flags().StringVar(&court, "court", "", "the court this root signs for, exactly as its warrants name it (required)")
	cmd.MarkFlagRequired("court")
	return cmd
}

func newTrustSetCRLCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "set-crl FILE",
		Short: "Store a CRL after checking its signature (PEM may append the issuing intermediate CA)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, data, err := openStoreAndRead(g, args[0], "X509 CRL", "a CRL (PEM or DER, as openssl ca -gencrl writes it)")
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
			g.printf("stored CRL of %s: %d revoked, next update %s\n", warrant.DisplayName(crl.Issuer.Subject.String()),
				len(crl.List.RevokedCertificateEntries), crl.List.NextUpdate.UTC().Format(time.RFC3339))
			return nil
		},
	}
}

func newTrustSetPolicyCommand(g *globals) *cobra.Command {
	var p trust.Policy
	cmd := &cobra.Command{
		Use:   "set-policy --signers N [--policy-oid OID...] [--eku OID...]",
		Short: "Set how many distinct signers a warrant needs, the certificate policies their chains must carry and the signing purposes accepted",
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
			g.printf("approval policy: %d signer(s), policy OIDs %s, accepted EKUs %s\n", p.Signers, warrant.OIDList(p.PolicyOIDs), warrant.OIDList(p.EKUs))
			return nil
		},
	}
	cmd.Flags().IntVar(&p.Signers, "signers", 1, "distinct signers a warrant needs (2 for a judge plus a second authority)")
	cmd.Flags().StringSliceVar(&p.PolicyOIDs, "policy-oid", nil, "certificate policy OID every signer certificate must carry")
	cmd.Flags().StringSliceVar(&p.EKUs, "eku", trust.DefaultEKUs(), "accepted signing purpose (extended key usage OID): a signer certificate carries one, and its CAs allow it; replaces the default list")
	return cmd
}

// logTrustChange applies a change to the trust store and, on an appliance
// whose ledger exists, records it there in the same step as the ledger
// binds the new store to the TPM: what the appliance trusts is part of its
// public record. A blocked ledger refuses the change.
func (g *globals) logTrustChange(subject []byte, apply func() error) error {
	if exists, err := ledger.Exists(g.dataDir); err == nil && !exists {
		return apply() // before ledger init: setting up; init binds the store
	}
	return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
		return blockedHint(a.ChangeTrust(subject, time.Now(), apply))
	})
}

// openStoreAndRead reads the certificate or CRL file (pemType) a trust
// command was given and opens the store it goes into.
func openStoreAndRead(g *globals, file, pemType, takes string) (*trust.Store, []byte, error) {
	data, err := readCapped(file, maxCertFile)
	if err != nil {
		return nil, nil, err
	}
	if err := checkPEMOrDER("FILE", file, data, pemType, takes); err != nil {
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
	Court   string `json:"court"`
	KeyID   string `json:"key_id"` // the court's replay namespace
	Subject string `json:"subject"`
	SHA256  string `json:"sha256"`
	// OpenSSLSHA256 is SHA256 as openssl x509 -fingerprint -sha256 prints it.
	OpenSSLSHA256 string    `json:"sha256_openssl"`
	NotAfter      time.Time `json:"not_after"`
}

type crlListing struct {
	Issuer     string    `json:"issuer"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
	Revoked    int       `json:"revoked"`
	Fresh      bool      `json:"fresh"`
	// Unusable says why a stored CRL no longer verifies; the certificates
	// of its issuer are then refused (crl_missing).
	Unusable string `json:"unusable,omitempty"`
}

// unusableCRLHint is the trust admin's way out of a CRL that no longer
// verifies.
const unusableCRLHint = "set the issuer's current CRL with the issuing CA's certificate and every CA certificate up to the root appended: " +
	"custodian trust set-crl FILE; until then its judges' warrants are refused (crl_missing), every other court's verify"

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
				g.printf("no roots: this store verifies nothing (custodian trust add-root FILE --court NAME)\n")
			}
			for _, r := range l.Roots {
				g.printf("root  %q  %s  until %s\n      %s\n", r.Court, warrant.DisplayName(r.Subject), r.NotAfter.Format(time.RFC3339), certfile.FingerprintLine(r.SHA256, r.OpenSSLSHA256))
			}
			for _, c := range l.CRLs {
				state := "fresh"
				switch {
				case c.Unusable != "":
					state = "DOES NOT VERIFY: warrants under it are refused (" + warrant.DisplayName(c.Unusable) + ")"
				case !c.Fresh:
					state = "STALE: warrants under it are refused"
				}
				g.printf("crl   %s  %d revoked  next update %s  %s\n", warrant.DisplayName(c.Issuer), c.Revoked, c.NextUpdate.Format(time.RFC3339), state)
			}
			g.printf("policy  %d signer(s)  policy OIDs %s  accepted EKUs %s\n", l.Policy.Signers, warrant.OIDList(l.Policy.PolicyOIDs), warrant.OIDList(l.Policy.EKUs))
			if len(s.UnusableCRLs()) != 0 {
				fmt.Fprintf(g.stderr, "hint: %s\n", unusableCRLHint)
			}
			return nil
		},
	}
}

func listTrust(s *trust.Store, now time.Time) trustListing {
	l := trustListing{Roots: []rootListing{}, CRLs: []crlListing{}, Policy: s.Policy()}
	for _, r := range s.Roots() {
		l.Roots = append(l.Roots, rootListing{Court: r.Court, KeyID: trust.RootKeyID(r.Cert), Subject: r.Cert.Subject.String(),
			SHA256: certfile.Fingerprint(r.Cert), OpenSSLSHA256: certfile.OpenSSLFingerprint(r.Cert), NotAfter: r.Cert.NotAfter.UTC()})
	}
	for _, c := range s.CRLs() {
		l.CRLs = append(l.CRLs, crlListing{
			Issuer: c.Issuer.Subject.String(), ThisUpdate: c.List.ThisUpdate.UTC(), NextUpdate: c.List.NextUpdate.UTC(),
			Revoked: len(c.List.RevokedCertificateEntries), Fresh: c.Fresh(now),
		})
	}
	for _, u := range s.UnusableCRLs() {
		c := crlListing{Issuer: u.Issuer, Unusable: u.Err.Error()}
		if u.Issuer == "" {
			c.Issuer = "issuer " + u.IssuerID
		}
		if u.List != nil {
			c.ThisUpdate, c.NextUpdate, c.Revoked = u.List.ThisUpdate.UTC(), u.List.NextUpdate.UTC(), len(u.List.RevokedCertificateEntries)
		}
		l.CRLs = append(l.CRLs, c)
	}
	return l
}
