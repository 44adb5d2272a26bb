package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/note"

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
			private, verifier, err := newRecordKey(name, out, pub)
			if err != nil {
				return err
			}
			if err := writeNew("out", out, []byte(private+"\n"), 0o600); err != nil {
				return err
			}
			if err := writeNew("pub", pub, []byte(verifier+"\n"), 0o644); err != nil {
				return withHint(err, fmt.Sprintf("the private key is already in %s: remove it too before you run keygen again", out))
			}
			if g.json {
				return g.printJSON(map[string]any{"private_key_file": out, "verifier_key_file": pub, "verifier_key": verifier})
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

// newRecordKey makes the record key after checking, before anything is
// written, that both files are new and distinct and that the key pair
// works: a name signed notes refuse (a space, a '+') would make a key that
// signs nothing.
func newRecordKey(name, out, pub string) (private, verifier string, err error) {
	if filepath.Clean(out) == filepath.Clean(pub) {
		return "", "", withHint(errors.New("--out and --pub name the same file"), "the private key and the verifier key go to two new files")
	}
	for flag, path := range map[string]string{"out": out, "pub": pub} {
		if _, err := os.Lstat(path); err == nil {
			return "", "", withHint(fmt.Errorf("--%s: %s already exists; keygen never replaces a key", flag, path), "choose another --"+flag)
		}
	}
	if private, verifier, err = enrollment.NewRecordKey(name); err == nil {
		if _, err = note.NewSigner(private); err == nil {
			_, err = note.NewVerifier(verifier)
		}
	}
	if err != nil {
		return "", "", withHint(fmt.Errorf("--name %q is not a usable key name", name),
			"a key name is printable text without spaces or '+', such as court-escrow-authority-2026")
	}
	return private, verifier, nil
}

// recordOutput is enroll verify's --record-out: the signed record of the
// verdict, for the authority to publish.
type recordOutput struct {
	out, keyPath, refuse string
	serial               uint64
	validFor             time.Duration
	signingKey           string // read by check
}

// defaultValidity is how long a verified record vouches unless the
// authority says otherwise: long enough between renewals, short enough
// that a withdrawal an auditor never saw still takes effect.
const defaultValidity = 90 * 24 * time.Hour

func (r *recordOutput) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&r.out, "record-out", "", "escrow authority: new file for the signed record of this verdict, to publish (needs --signing-key and --serial)")
	f.StringVar(&r.keyPath, "signing-key", "", "with --record-out: the authority's private record key (custodian enroll keygen)")
	f.Uint64Var(&r.serial, "serial", 0, "with --record-out: this record's number among the custodian's records, one more than the last one published (1 for the first)")
	f.DurationVar(&r.validFor, "valid-for", defaultValidity, "with --record-out: how long a verified record vouches (then the authority issues a new one)")
	f.StringVar(&r.refuse, "refuse", "", "with --record-out: sign a refusal of the device instead of checking it ("+strings.Join(enrollment.Reasons, ", ")+"); a newer refusal withdraws the verified records before it")
}

func (r *recordOutput) enabled() bool { return r.out != "" }

// check refuses flag combinations that would publish what the authority
// did not itself establish, and reads the signing key, before any work.
func (r *recordOutput) check(c *enrollmentChecks) error {
	switch {
	case r.out == "" && r.keyPath == "" && r.refuse == "" && r.serial == 0:
		return nil
	case r.out == "":
		return withHint(errors.New("--signing-key, --serial and --refuse need --record-out"), "name the new file for the record")
	case r.keyPath == "":
		return withHint(errors.New("--record-out needs --signing-key"), "the authority's private key from custodian enroll keygen")
	case r.serial == 0:
		return withHint(errors.New("--record-out needs --serial"),
			"number each custodian's records 1, 2, 3, ... in the order you sign them: auditors trust only the newest, so a later refusal withdraws an earlier record")
	case r.validFor <= 0 || r.validFor > 400*24*time.Hour:
		return withHint(fmt.Errorf("--valid-for %s is not between a second and 400 days", r.validFor), "the default is 90 days (2160h)")
	case len(c.recordPaths) > 0:
		return withHint(errors.New("a record is written from the challenge secret, not from another record"), "pass --secret instead of --record")
	case c.allowUnbound && r.refuse == "":
		return withHint(errors.New("--record-out cannot vouch for an attestation key accepted with --allow-unbound-ak"), "verify with --secret")
	case r.refuse != "" && !slices.Contains(enrollment.Reasons, r.refuse):
		return withHint(fmt.Errorf("--refuse %q is not a reason a record gives", r.refuse), "one of "+strings.Join(enrollment.Reasons, ", "))
	}
	if err := mustNotExist("record-out", r.out); err != nil {
		return withHint(err, "a published record is never replaced: a newer one with a higher --serial supersedes it")
	}
	data, err := readFlagFile("signing-key", r.keyPath, maxKeyFileSize)
	if err != nil {
		return err
	}
	r.signingKey = strings.TrimSpace(string(data))
	if _, err := note.NewSigner(r.signingKey); err != nil {
		return withHint(errors.New("--signing-key: not a signed-note private key"),
			"give the private key custodian enroll keygen wrote to --out (not the .pub file)")
	}
	return nil
}

func (r *recordOutput) terms(now time.Time) enrollment.Terms {
	return enrollment.Terms{Serial: r.serial, NotAfter: now.Add(r.validFor)}
}

// writeVerified signs and writes the record of a verified enrollment.
func (r *recordOutput) writeVerified(g *globals, e *enrollment.Enrollment, v *enrollment.Verified) error {
	now := time.Now()
	rec, err := enrollment.VerifiedRecord(e, v, now, r.terms(now))
	if err != nil {
		return withHint(err, "no record was written")
	}
	return r.write(g, rec)
}

// writeRefusal signs and writes the authority's deliberate refusal of e's
// device; it is never the side effect of a failed check.
func (r *recordOutput) writeRefusal(g *globals, e *enrollment.Enrollment) error {
	now := time.Now()
	rec, err := enrollment.RefusedRecord(e, r.refuse, now, r.terms(now))
	if err != nil {
		return withHint(err, "no record was written")
	}
	return r.write(g, rec)
}

func (r *recordOutput) write(g *globals, rec *enrollment.Record) error {
	signed, err := rec.Sign(r.signingKey)
	if err != nil {
		return err
	}
	if err := writeNew("record-out", r.out, signed, 0o644); err != nil {
		return err
	}
	// To stderr: stdout may carry the verdict as --json.
	fmt.Fprintf(g.stderr, "record %d of %s (%s) written to %s; publish it beside the custodian's earlier records\n",
		rec.Serial, rec.CustodianID, rec.Verdict, r.out)
	return nil
}
