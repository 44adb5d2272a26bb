package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/enrollment"
)

// The escrow authority's enrollment records: signed notes an auditor
// checks with the authority's verifier key instead of the challenge
// secret (hsm/enrollment, Record).

func newEnrollKeygenCommand(g *globals) *cobra.Command {
	var name, out, pub string
	cmd := &cobra.Command{
		Use:   "keygen --out authority.key --pub authority.pub",
		Short: "Make the escrow authority's record key, which signs the enrollment records auditors check",
		Long: `Keygen makes the escrow authority's record key once: an Ed25519 signed-note
key. The private key (--out, created 0600, never overwritten) stays on the
authority's offline workstation and signs a record of each enrollment it
verifies (custodian enroll verify --record-out). Publish the verifier key
(--pub, also printed) where auditors pin it: with it and a record, anyone
checks an enrollment or an attestation without the challenge secret.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			private, verifier, err := enrollment.NewRecordKey(name)
			if err != nil {
				return err
			}
			if err := writeNew(out, []byte(private+"\n"), 0o600); err != nil {
				return err
			}
			if err := writeNew(pub, []byte(verifier+"\n"), 0o644); err != nil {
				return err
			}
			g.printf("record key: private in %s (keep offline), verifier key in %s; publish it:\n%s\n", out, pub, verifier)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "custodian-escrow-authority", "the key's name (no spaces or '+')")
	f.StringVar(&out, "out", "", "new file for the private key (0600)")
	f.StringVar(&pub, "pub", "", "new file for the verifier key, to publish")
	_ = cmd.MarkFlagRequired("out")
	_ = cmd.MarkFlagRequired("pub")
	return cmd
}

// recordOutput is enroll verify's --record-out: the signed record of the
// verdict, for the authority to publish.
type recordOutput struct {
	out, keyPath string
}

func (r *recordOutput) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&r.out, "record-out", "", "escrow authority: new file for the signed record of this verdict, to publish (needs --signing-key)")
	f.StringVar(&r.keyPath, "signing-key", "", "with --record-out: the authority's private record key (custodian enroll keygen)")
}

func (r *recordOutput) enabled() bool { return r.out != "" }

// check refuses flag combinations that would publish what the authority
// did not itself establish, before any work.
func (r *recordOutput) check(c *enrollmentChecks) error {
	switch {
	case r.out == "" && r.keyPath == "":
		return nil
	case r.out == "":
		return withHint(errors.New("--signing-key needs --record-out"), "name the new file for the record")
	case r.keyPath == "":
		return withHint(errors.New("--record-out needs --signing-key"), "the authority's private key from custodian enroll keygen")
	case c.recordPath != "":
		return withHint(errors.New("a record is written from the challenge secret, not from another record"), "pass --secret instead of --record")
	case c.allowUnbound:
		return withHint(errors.New("--record-out cannot vouch for an attestation key accepted with --allow-unbound-ak"), "verify with --secret")
	}
	return mustNotExist(r.out)
}

// write signs and writes the record of the verdict: verified when
// verifyErr is nil, refused otherwise.
func (r *recordOutput) write(g *globals, e *enrollment.Enrollment, v *enrollment.Verified, verifyErr error) error {
	key, err := os.ReadFile(r.keyPath)
	if err != nil {
		return err
	}
	var rec *enrollment.Record
	if verifyErr == nil {
		rec, err = enrollment.VerifiedRecord(e, v, time.Now())
	} else {
		rec, err = enrollment.RefusedRecord(e, verifyErr, time.Now())
	}
	if err != nil {
		return withHint(err, "no record was written")
	}
	signed, err := rec.Sign(strings.TrimSpace(string(key)))
	if err != nil {
		return err
	}
	if err := writeNew(r.out, signed, 0o644); err != nil {
		return err
	}
	// To stderr: stdout may carry the verdict as --json.
	fmt.Fprintf(g.stderr, "record of %s (%s) written to %s; publish it\n", e.CustodianID, rec.Verdict, r.out)
	return nil
}
