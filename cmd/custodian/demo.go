//go:build !appliance

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing/fstest"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/firmware/measure/measuretest"
	"github.com/custodian-project/custodian/hsm/bootpolicy"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/recipient"
	"github.com/custodian-project/custodian/hsm/release/tlstest"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm/swtpm"
)

// The demo's cast: three custodians at three courts, one target, one
// message. They are fixed so that every run tells the same story.
var (
	demoCustodianIDs = []string{"court-a", "court-b", "court-c"}
	demoReleasers    = []string{"court-a", "court-b"} // the threshold, 2 of 3
	demoTarget       = "alice@example.org"
	demoMessage      = []byte("Meet at the harbour at six. Bring the ledger.\n")
)

const demoThreshold = 2

func newDemoCommand(g *globals) *cobra.Command {
	var keep, tpmKind string
	cmd := &cobra.Command{
		Use:   "demo [--keep DIR] [--tpm-kind swtpm]",
		Short: "Run the whole story on this machine: three custodians, a warrant, two releases, the named envelope opened",
		Long: `Demo plays every role on this machine, in about ten seconds, and prints one
line per step naming who did it: the operator measures a boot and predicts the
policy; three custodians (court-a, court-b, court-c, each on its own swtpm)
enroll and create their ledgers; the escrow authority runs a 2-of-3 scoped
ceremony (each share a key inside one TPM) and the custodians provision their
shares; two messages for one target are sealed in escrow envelopes; the court
trust admin installs a court root and CRL; the judge signs a warrant naming
the first envelope (a software key here; a PIV card through PKCS#11 in
production); the operator makes the custodians' TLS certificate and the
court its officers' CA and an officer's client certificate; the court officer
submits the warrant over TLS 1.3 with that certificate to court-a and court-b
and presses each simulated button, and each TPM computes and proves its
partial decryption of that envelope; a replay is refused, and so is a
submission without an officer's certificate; the agency checks the
proofs and opens the named envelope, and the same releases do not open the
other; the auditor checks a checkpoint and an inclusion proof, and writes
the transparency report of the three ledgers (report/index.html in --keep DIR).

It exits 0 only if the opened envelope equals the original message. Every
file stays in --keep DIR for inspection; without it a temporary directory is
removed. It needs swtpm (make test, or make run, installs it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tpmKind != "swtpm" {
				return withHint(fmt.Errorf("unknown --tpm-kind %q", tpmKind),
					"use --tpm-kind swtpm: the in-process simulator is one TPM per process, and the demo needs three")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.demo(ctx, keep)
		},
	}
	cmd.Flags().StringVar(&keep, "keep", "", "keep every file (data directories, bundles, warrant, packages, keys) in this new or empty directory")
	cmd.Flags().StringVar(&tpmKind, "tpm-kind", "swtpm", "the custodians' TPMs: swtpm (one process per custodian)")
	return cmd
}

// demo is one run of the story: its directory, its clock, and what each
// step hands to the next.
type demo struct {
	g          *globals
	dir        string
	now        time.Time
	keyID      string
	custodians []*demoCustodian
	policy     *bootpolicy.Policy
	escrow     *escrow.Public
	agency     *recipient.Identity
	envelope   []byte // named in the warrant
	other      []byte // same key ID and target, not named
	court      *demoCourt
	pki        *tlstest.PKI
	p7s        []byte
	packages   []*escrow.Release
}

func (g *globals) demo(ctx context.Context, keep string) error {
	if err := swtpm.Installed(); err != nil {
		return withHint(err, "make test installs swtpm (make run too); or: sudo apt-get install swtpm swtpm-tools")
	}
	dir, cleanup, err := demoDir(keep)
	if err != nil {
		return err
	}
	defer cleanup()
	start := time.Now()
	now := start.UTC()
	d := &demo{g: g, dir: dir, now: now, keyID: now.Format("2006-01")}
	defer d.stop()
	if err := d.run(ctx); err != nil {
		return err
	}
	d.say("demo", "the opened message equals the original: done in %.1fs", time.Since(start).Seconds())
	if keep != "" {
		d.say("demo", "every file is kept in %s", dir)
	}
	return nil
}

// demoDir is --keep (new or empty) or a temporary directory removed at the
// end.
func demoDir(keep string) (string, func(), error) {
	if keep == "" {
		dir, err := os.MkdirTemp("", "custodian-demo-")
		if err != nil {
			return "", nil, err
		}
		return dir, func() { os.RemoveAll(dir) }, nil
	}
	if err := os.MkdirAll(keep, 0o700); err != nil {
		return "", nil, err
	}
	if entries, err := os.ReadDir(keep); err != nil || len(entries) > 0 {
		return "", nil, withHint(fmt.Errorf("%s is not an empty directory", keep), "give --keep a new or empty directory")
	}
	abs, err := filepath.Abs(keep)
	return abs, func() {}, err
}

// run plays the steps in the order the flows happen in the field. Each
// step checks ctx first, so an interrupt stops the story between steps
// and the deferred stop still ends every swtpm.
func (d *demo) run(ctx context.Context) error {
	steps := []func(context.Context) error{
		d.bootCustodians,
		d.predictPolicy,
		d.enrollCustodians,
		d.runCeremony,
		d.provision,
		d.agencyKeygen,
		d.sealEnvelope,
		d.installTrust,
		d.signWarrant,
		d.makeTLS,
		d.serveCustodians,
		d.releaseShares,
		d.replay,
		d.stranger,
		d.openEnvelope,
		d.audit,
		d.transparencyReport,
	}
	for _, step := range steps {
		err := ctx.Err()
		if err == nil {
			err = step(ctx)
		}
		if ctx.Err() != nil {
			return withHint(errors.New("the demo was interrupted"), "run it again (with --keep, into a new directory)")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// say prints one line of the story: who did what.
func (d *demo) say(role, format string, args ...any) {
	d.g.printf("%-18s %s\n", role+":", fmt.Sprintf(format, args...))
}

// path is a file in the demo directory.
func (d *demo) path(name string) string { return filepath.Join(d.dir, name) }

// write saves a file for inspection with --keep.
func (d *demo) write(name string, data []byte, mode os.FileMode) error {
	return os.WriteFile(d.path(name), data, mode)
}

func (d *demo) stop() {
	for _, c := range d.custodians {
		c.stop()
	}
}

// bootCustodians starts one swtpm per custodian and measures its boot of
// the approved image, as its early init would.
func (d *demo) bootCustodians(context.Context) error {
	for _, id := range demoCustodianIDs {
		c, err := startDemoCustodian(id, filepath.Join(d.dir, id))
		if c != nil {
			d.custodians = append(d.custodians, c)
		}
		if err != nil {
			return fmt.Errorf("custodian %s: %w", id, err)
		}
		if _, err := measure.Boot(c.conn, measure.DefaultSpec(), demoImage(), c.runDir()); err != nil {
			return fmt.Errorf("measuring the boot of %s: %w", id, err)
		}
		d.say("operator", "booted %s on its own swtpm (port %d) and measured the approved image into PCRs %s",
			id, c.sw.DataPort, pcrList(measure.DefaultSpec().PCRs()))
	}
	return nil
}

// demoImage is the approved image's root filesystem, as the build host
// and each device see it.
func demoImage() fstest.MapFS { return measuretest.Root("listen = \"0.0.0.0:8443\"\n") }

// predictPolicy is the operator's prediction from the image: the PCR
// values the shares are sealed to. It must equal what each device measured.
func (d *demo) predictPolicy(context.Context) error {
	p, err := measure.DefaultSpec().Predict(demoImage(), nil)
	if err != nil {
		return err
	}
	data, err := p.Marshal()
	if err != nil {
		return err
	}
	d.policy = p
	d.say("operator", "predicted the image's policy from the image alone (policy.json, %d boot events)", len(p.Events))
	return d.write("policy.json", data, 0o644)
}

// runCeremony is the escrow authority's offline ceremony: 2-of-3 for this
// month's key ID, each share sealed to one verified import key and the
// policy.
func (d *demo) runCeremony(context.Context) error {
	var members []escrow.Member
	for _, c := range d.custodians {
		members = append(members, escrow.Member{ID: c.id, EK: c.ek, ImportKey: c.importKey})
	}
	pub, bundles, err := escrow.Ceremony(d.keyID, demoThreshold, d.policy.PCRs, members, escrow.WithSecurityVersion(d.policy.SecurityVersion))
	if err != nil {
		return err
	}
	d.escrow = pub
	dir := d.path("ceremony")
	if err := writeCeremony(dir, pub, bundles); err != nil {
		return err
	}
	d.say("escrow authority", "ran the %s ceremony for key ID %s: %d of %d custodians open an envelope together; each share is a key inside one TPM, under the policy; the key is gone",
		pub.Mode, d.keyID, demoThreshold, len(members))
	return nil
}

// provision stores each custodian's bundle after its TPM opened it under
// the current PCRs and the share matched the commitments.
func (d *demo) provision(context.Context) error {
	for _, c := range d.custodians {
		data, err := os.ReadFile(filepath.Join(d.path("ceremony"), c.id+".bundle.json"))
		if err != nil {
			return err
		}
		if _, err := c.app.Provision(c.conn, data, time.Now()); err != nil {
			return fmt.Errorf("provisioning %s: %w", c.id, err)
		}
		d.say("custodian "+c.id, "provisioned its share of %s (its TPM proved a partial decryption against the commitments; logged)", d.keyID)
	}
	return nil
}

func (d *demo) agencyKeygen(context.Context) error {
	id, err := recipient.Generate("")
	if err != nil {
		return err
	}
	d.agency = id
	if err := d.write("agency.key", []byte(id.String()+"\n"), 0o600); err != nil {
		return err
	}
	d.say("agency", "made its recipient key pair (agency.key, agency.pub): releases are sealed to it")
	return d.write("agency.pub", []byte(id.Public().String()+"\n"), 0o644)
}

// sealEnvelope is the messaging side: a message escrowed under this
// month's key, for one target.
func (d *demo) sealEnvelope(context.Context) error {
	env, err := escrow.Seal(d.escrow, demoTarget, demoMessage)
	if err != nil {
		return err
	}
	d.envelope = env
	if err := d.write("message.txt", demoMessage, 0o600); err != nil {
		return err
	}
	d.say("messaging service", "sealed a %d-byte message for %s under key ID %s, with its proof that it drew the envelope's key (message.env)", len(demoMessage), demoTarget, d.keyID)
	if err := d.write("message.env", env, 0o644); err != nil {
		return err
	}
	if d.other, err = escrow.Seal(d.escrow, demoTarget, []byte("another conversation\n")); err != nil {
		return err
	}
	d.say("messaging service", "sealed another message for %s under the same key ID (other.env)", demoTarget)
	return d.write("other.env", d.other, 0o644)
}

// signWarrant is the judge's act. The key is in memory here; in production
// it is on the judge's PIV card and never leaves it.
func (d *demo) signWarrant(context.Context) error {
	w := &warrant.Warrant{Version: 1, Serial: "W-" + d.keyID + "-0001", Docket: "CR-17/" + d.now.Format("2006"),
		Court: demoCourtName, Agency: "Harbour Police", Official: "Inspector Morse", Offence: "smuggling",
		Targets: []string{demoTarget}, KeyIDs: []string{d.keyID}, Custodians: demoCustodianIDs,
		NotBefore: d.now.Add(-time.Hour).Format(time.RFC3339), NotAfter: d.now.Add(7 * 24 * time.Hour).Format(time.RFC3339),
		Recipient: d.agency.Public().String()}
	env, err := escrow.ParseEnvelope(d.envelope)
	if err != nil {
		return err
	}
	w.Envelopes = []warrant.EnvelopeRef{env.Ref()}
	content, err := w.Marshal(0)
	if err != nil {
		return err
	}
	p7s, err := warrant.Sign(content, []warrant.Signer{d.court.judgeSigner()}, time.Now())
	if err != nil {
		return err
	}
	d.p7s = p7s
	if err := d.write("warrant.json", content, 0o644); err != nil {
		return err
	}
	d.say("judge", "signed warrant %s for %s, key ID %s, naming message.env only, custodians %s, to the agency's key (software key; SoftHSM2/PIV in production)",
		w.Serial, demoTarget, d.keyID, strings.Join(demoCustodianIDs, ","))
	return d.write("warrant.p7s", p7s, 0o644)
}

// makeTLS is the operator's and the court's TLS work: a server
// certificate for the custodians (here one, for the loopback address) and
// the court officers' CA with one officer's client certificate.
func (d *demo) makeTLS(context.Context) error {
	dir := d.path("tls")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	pki, err := tlstest.Write(dir, d.now)
	if err != nil {
		return err
	}
	d.pki = pki
	d.say("operator", "made the custodians' TLS server certificate (ECDSA P-256, under tls/server-ca.pem, which clients pin)")
	d.say("court", "made the court officers' CA and the officer's client certificate (tls/officer.pem)")
	return nil
}

// openEnvelope is the agency's side: the proofs of two packages' partials
// are checked and the named envelope opens; the demo succeeds only if the
// bytes are the original's, and only if the other envelope stays closed.
func (d *demo) openEnvelope(context.Context) error {
	env, opened, err := escrow.OpenScoped(d.agency, d.escrow, d.packages, d.envelope)
	if err != nil {
		return err
	}
	if err := d.write("opened.txt", opened, 0o600); err != nil {
		return err
	}
	if !bytes.Equal(opened, demoMessage) {
		return errors.New("the opened envelope differs from the original message")
	}
	d.say("agency", "checked %d partial decryptions against their TPM proofs and opened the envelope for %s: %q",
		len(d.packages), env.Target, strings.TrimSpace(string(opened)))
	if _, _, err := escrow.OpenScoped(d.agency, d.escrow, d.packages, d.other); !errors.Is(err, escrow.ErrNotEnoughShares) {
		return fmt.Errorf("the releases opened, or failed otherwise on, an envelope the warrant did not name: %v", err)
	}
	d.say("agency", "the same releases do not open other.env: the warrant did not name it")
	return nil
}

func pcrList(pcrs []int) string {
	s := make([]string, len(pcrs))
	for i, p := range pcrs {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, ",")
}
