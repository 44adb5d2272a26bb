package main

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/tpm"
)

func newEnrollCommand(g *globals) *cobra.Command {
	var id, out, challengePath, ekKind string
	cmd := &cobra.Command{
		Use:   "enroll --id ID --out enrollment.json",
		Short: "Enroll this device: endorsement key, attestation key and a quote of its boot state",
		Long: `Enroll records this device's TPM identity for the escrow authority: the
endorsement key (EK) with its manufacturer certificate, the attestation key
(AK), a quote of PCRs 0-15, and the import key (a key that only imports and
loads, which the escrow authority seals shares to), certified by the AK.

Proving that the AK lives in the EK's TPM takes one round trip: a verifier
runs "custodian enroll challenge" on the first enrollment, and the device
enrolls again with --challenge. The result verifies with the verifier's secret.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kind, err := tpm.ParseEKKind(ekKind)
			if err != nil {
				return err
			}
			var challenge *enrollment.Challenge
			if challengePath != "" {
				if challenge, err = readChallenge(challengePath); err != nil {
					return err
				}
			}
			t, err := g.openTPM()
			if err != nil {
				return err
			}
			defer t.Close()
			e, err := enrollment.Create(t, id, kind, challenge, time.Now())
			if err != nil {
				return err
			}
			if err := g.saveEnrollment(e, out); err != nil {
				return err
			}
			floor, err := tpm.ReadFloor(t)
			if err != nil {
				return err
			}
			return g.reportEnrollment(e, out, floor)
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "custodian ID of this device (e.g. court-a)")
	f.StringVar(&out, "out", "", "file to write the enrollment to")
	f.StringVar(&challengePath, "challenge", "", "answer this challenge from \"custodian enroll challenge\"")
	f.StringVar(&ekKind, "ek", "rsa-2048", "endorsement key to use: rsa-2048 or ecc-p256")
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("out")
	cmd.AddCommand(newEnrollChallengeCommand(g), newEnrollVerifyCommand(g), newEnrollKeygenCommand(g))
	return cmd
}

// saveEnrollment writes e to out and keeps a copy in the data directory,
// where later commands (provision, attest) find the device's identity.
func (g *globals) saveEnrollment(e *enrollment.Enrollment, out string) error {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := os.MkdirAll(g.dataDir, 0o700); err != nil {
		return withHint(err, "choose a writable --data-dir (env CUSTODIAN_DATA_DIR)")
	}
	if err := durable.WriteFile(filepath.Join(g.dataDir, "enrollment.json"), data, 0o644); err != nil {
		return err
	}
	return durable.WriteFile(out, data, 0o644)
}

func (g *globals) reportEnrollment(e *enrollment.Enrollment, out string, floor uint64) error {
	if g.json {
		return g.printJSON(map[string]any{
			"custodian_id": e.CustodianID, "out": out, "ek_kind": e.EK.Kind,
			"ek_certificate": e.EK.Certificate != nil, "activated": e.Activated, "floor": floor,
		})
	}
	g.printf("enrolled custodian %s into %s\n", e.CustodianID, out)
	g.printf("  endorsement key: %s, manufacturer certificate: %s\n", e.EK.Kind, yesNo(e.EK.Certificate != nil))
	g.printf("  security version floor: %d\n", floor)
	if floor > 1 {
		fmt.Fprintf(g.stderr, "warning: this TPM's floor starts at %d (it held counters before); only images with security_version >= %d open here\n", floor, floor)
	}
	if e.Activated {
		g.printf("  attestation key: answered the challenge; verify with its secret\n")
	} else {
		g.printf("  attestation key: not yet proven; next: custodian enroll challenge --in %s\n", out)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// readEnrollment reads the enrollment.json that flag names.
func readEnrollment(flag, path string) (*enrollment.Enrollment, error) {
	return readDocument(flag, path, "an enrollment (enrollment.json, from custodian enroll)", enrollment.Parse)
}

func readChallenge(path string) (*enrollment.Challenge, error) {
	return readDocument("--challenge", path, "a challenge (challenge.json, from custodian enroll challenge)", enrollment.ParseChallenge)
}

func newEnrollChallengeCommand(g *globals) *cobra.Command {
	var in, out, secretOut string
	cmd := &cobra.Command{
		Use:   "challenge --in enrollment.json --out challenge.json --secret-out challenge.secret",
		Short: "Challenge an enrollment's attestation key (verifier side)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := readEnrollment("--in", in)
			if err != nil {
				return err
			}
			c, secret, err := enrollment.NewChallenge(e)
			if err != nil {
				return err
			}
			if err := durable.CreateFile(secretOut, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
				return withHint(err, "each challenge needs a new secret file")
			}
			data, err := json.MarshalIndent(c, "", "  ")
			if err != nil {
				return err
			}
			if err := durable.WriteFile(out, append(data, '\n'), 0o644); err != nil {
				return err
			}
			g.printf("challenge for %s written to %s; keep %s to verify the answer\n", e.CustodianID, out, secretOut)
			g.printf("next, on the device: custodian enroll --id %s --challenge %s --out enrollment.json\n", e.CustodianID, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "the device's enrollment")
	f.StringVar(&out, "out", "", "file to write the challenge to (goes to the device)")
	f.StringVar(&secretOut, "secret-out", "", "new file for the secret the verifier keeps (created 0600)")
	for _, name := range []string{"in", "out", "secret-out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func newEnrollVerifyCommand(g *globals) *cobra.Command {
	var in string
	var checks enrollmentChecks
	var publish recordOutput
	cmd := &cobra.Command{
		Use:   "verify --in enrollment.json --secret challenge.secret",
		Short: "Verify an enrollment: EK certificate, AK binding, and quote",
		Long: `Verify checks an enrollment: the EK certificate, the attestation key's
binding to the EK (with the challenge secret the escrow authority kept, or
the record the authority published: --record, --authority-key), the quote of
PCRs 0-15 and the import key's certification.

With --record-out, --signing-key and --serial, the escrow authority also
writes the signed record of an enrollment that verified, which it publishes
so that auditors can trust the enrollment without the secret. A failed check
writes nothing. To refuse or withdraw a device, the authority signs a
refusal deliberately with --refuse REASON and a higher --serial: auditors
trust only a custodian's newest record, and a verified record stops
vouching after --valid-for.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := publish.check(&checks); err != nil {
				return err
			}
			e, err := readEnrollment("--in", in)
			if err != nil {
				return err
			}
			if publish.refuse != "" {
				// A deliberate refusal: the enrollment is read only to name
				// the device's keys.
				return publish.writeRefusal(g, e)
			}
			opts, err := checks.options(e)
			if err != nil {
				return err
			}
			v, err := verifyWith(e, opts)
			if err != nil {
				if publish.enabled() {
					// A failed check is never signed: it may be the
					// authority's own mistake (a missing --ek-roots, the
					// wrong --secret).
					return withHint(err, "no record was written; if the authority means to refuse the device, run the same command with --refuse REASON ("+
						strings.Join(enrollment.Reasons, ", ")+")")
				}
				return err
			}
			if publish.enabled() {
				if err := publish.writeVerified(g, e, v); err != nil {
					return err
				}
			}
			if g.json {
				return g.printJSON(map[string]any{
					"custodian_id": e.CustodianID, "verified": true,
					"ek_certified": v.EKCertified, "ak_bound": v.AKBound,
				})
			}
			g.printf("enrollment of %s verifies: EK certified: %s, AK bound to EK: %s, quote over PCRs 0-15: good\n",
				e.CustodianID, yesNo(v.EKCertified), yesNo(v.AKBound))
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "enrollment to verify")
	checks.register(cmd)
	checks.registerRecord(cmd)
	publish.register(cmd)
	_ = cmd.MarkFlagRequired("in")
	return cmd
}

// enrollmentChecks are the flags of every command that trusts an
// enrollment: enroll verify, policy from-enrollment, ceremony.
type enrollmentChecks struct {
	secrets          []string // "FILE" or "ID=FILE"
	rootsPath        string
	allowUnbound     bool
	allowUncertified bool
	// recordPaths and authorityKey: the escrow authority's published
	// records of the custodian and its verifier key, in place of a secret
	// (only where registerRecord added the flags).
	recordPaths  []string
	authorityKey string
}

func (c *enrollmentChecks) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&c.secrets, "secret", nil, "challenge secret kept from \"custodian enroll challenge\": FILE, or ID=FILE per custodian")
	f.StringVar(&c.rootsPath, "ek-roots", "", "PEM file of EK CA certificates (default: the TPM vendor roots built in)")
	f.BoolVar(&c.allowUnbound, "allow-unbound-ak", false, "accept an AK not proven by a challenge")
	f.BoolVar(&c.allowUncertified, "allow-uncertified-ek", false, "accept an EK without a manufacturer certificate (simulators)")
}

// registerRecord adds the flags that let anyone without the challenge
// secret trust an enrollment on the escrow authority's published record.
func (c *enrollmentChecks) registerRecord(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&c.recordPaths, "record", nil, "instead of --secret: the escrow authority's published records of this custodian, each with its own --record (give them all: the newest stands, and a refusal withdraws older ones)")
	f.StringVar(&c.authorityKey, "authority-key", "", "with --record: the escrow authority's published verifier key, or a file holding it (authority.pub)")
}

// verify checks e with the secret given for its custodian (or the only
// secret given, if it names none), or with the authority's record.
func (c *enrollmentChecks) verify(e *enrollment.Enrollment) (*enrollment.Verified, error) {
	opts, err := c.options(e)
	if err != nil {
		return nil, err
	}
	return verifyWith(e, opts)
}

// options reads what the flags name for e: an error here is the
// verifier's (a missing file), not the enrollment's.
func (c *enrollmentChecks) options(e *enrollment.Enrollment) (enrollment.VerifyOptions, error) {
	opts := enrollment.VerifyOptions{AllowUnboundAK: c.allowUnbound, AllowUncertifiedEK: c.allowUncertified}
	var err error
	if c.rootsPath != "" {
		if opts.EKRoots, err = readCertPool(c.rootsPath); err != nil {
			return opts, err
		}
	}
	if path := c.secretFor(e.CustodianID); path != "" {
		if opts.Secret, err = readSecret(path); err != nil {
			return opts, withHint(err, "--secret is the challenge.secret that custodian enroll challenge wrote: FILE, or ID=FILE for each custodian")
		}
	}
	opts.Records, err = c.records()
	return opts, err
}

func verifyWith(e *enrollment.Enrollment, opts enrollment.VerifyOptions) (*enrollment.Verified, error) {
	v, err := e.Verify(opts)
	if err != nil {
		return nil, verifyHint(fmt.Errorf("enrollment of %s: %w", e.CustodianID, err))
	}
	return v, nil
}

func (c *enrollmentChecks) secretFor(id string) string {
	for _, s := range c.secrets {
		if name, path, ok := strings.Cut(s, "="); ok && name == id {
			return path
		}
	}
	if len(c.secrets) == 1 && !strings.Contains(c.secrets[0], "=") {
		return c.secrets[0]
	}
	return ""
}

// records opens the authority's records given with --record, if any.
func (c *enrollmentChecks) records() ([]*enrollment.Record, error) {
	switch {
	case len(c.recordPaths) == 0 && c.authorityKey == "":
		return nil, nil
	case len(c.recordPaths) == 0:
		return nil, withHint(errors.New("--authority-key needs --record"), "give the records the escrow authority published for this custodian")
	case c.authorityKey == "":
		return nil, withHint(errors.New("--record needs --authority-key"), "pin the escrow authority's published verifier key (authority.pub)")
	case len(c.secrets) > 0:
		return nil, withHint(errors.New("--record and --secret both prove the attestation key"), "give one: the secret (escrow authority) or the records (everyone else)")
	}
	key, err := readKeyArg("authority-key", c.authorityKey)
	if err != nil {
		return nil, err
	}
	if err := checkVerifierKey("authority-key", key); err != nil {
		return nil, err
	}
	var out []*enrollment.Record
	for _, path := range c.recordPaths {
		signed, err := readFlagFile("record", path, maxKeyFileSize)
		if err != nil {
			return nil, err
		}
		r, err := enrollment.OpenRecord(signed, key)
		if err != nil {
			return nil, recordHint(fmt.Errorf("--record %s: %w", path, err))
		}
		out = append(out, r)
	}
	return out, nil
}

func recordHint(err error) error {
	switch {
	case errors.Is(err, enrollment.ErrRecordWrongKey):
		return withHint(err, "check --authority-key against the verifier key the escrow authority published; a record signed by any other key proves nothing")
	case errors.Is(err, enrollment.ErrRecordTampered):
		return withHint(err, "fetch the record again from where the authority publishes it; if it still fails, report it")
	case errors.Is(err, enrollment.ErrRecordMalformed):
		return withHint(err, "--record takes a file custodian enroll verify --record-out wrote")
	case errors.Is(err, enrollment.ErrRecordMismatch):
		return withHint(err, "give the records the authority published for this custodian's enrollment")
	case errors.Is(err, enrollment.ErrRecordRefused):
		return withHint(err, "ask the escrow authority why it refused the device")
	case errors.Is(err, enrollment.ErrRecordExpired):
		return withHint(err, "fetch the custodian's newest record from where the authority publishes them; if there is none, ask the authority to verify the device again")
	}
	return err
}

func verifyHint(err error) error {
	switch {
	case errors.Is(err, enrollment.ErrRecordMismatch), errors.Is(err, enrollment.ErrRecordRefused), errors.Is(err, enrollment.ErrRecordExpired):
		return recordHint(err)
	case errors.Is(err, enrollment.ErrAKUnbound):
		return withHint(err, "run custodian enroll challenge, answer it on the device, and pass --secret; without the secret, enroll verify and attest verify take the escrow authority's published --record and --authority-key")
	case errors.Is(err, enrollment.ErrEKUncertified):
		return withHint(err, "a simulated TPM has no certificate: --allow-uncertified-ek trusts the EK as enrolled in person")
	case errors.Is(err, enrollment.ErrEKUntrusted):
		return withHint(err, "a TPM whose maker is not among the roots built in: get its EK CA certificates (root and intermediates, PEM) from the maker, check them, and pass them with --ek-roots FILE; otherwise find out why before you trust the device",
			"for swtpm they are swtpm-localca-rootca-cert.pem and issuercert.pem in swtpm-localca's statedir (/var/lib/swtpm-localca by default, see /etc/swtpm-localca.conf)")
	}
	return err
}

func readSecret(path string) ([]byte, error) {
	data, err := readFlagFile("secret", path, maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(secret) == 0 {
		return nil, fmt.Errorf("%s: not a challenge secret (hex)", path)
	}
	return secret, nil
}
