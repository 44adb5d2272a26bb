package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
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
	var recipientFile, out, listOut string
	var envelopes, envelopeDirs []string
	var maxValidity time.Duration
	cmd := &cobra.Command{
		Use:   "new --serial S --docket D --court C --agency A --official O --offence X --target T... --key-id K... [--envelope F.env... | --envelope-dir DIR...] [--envelope-list w.envelopes] --custodian ID... --recipient agency.pub --not-before TIME --not-after TIME --out w.json",
		Short: "Write a warrant document for a judge to sign",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" || recipientFile == "" {
				return badUsage(errors.New("--out and --recipient are required"))
			}
			pub, err := os.ReadFile(recipientFile)
			if err != nil {
				return withHint(err, "--recipient names the agency.pub file from custodian agency keygen")
			}
			if head := bytes.TrimLeft(pub, " \t\r\n"); !bytes.HasPrefix(head, []byte("custodian-recipient-")) {
				return withHint(fmt.Errorf("--recipient %s is not an agency public key: %s", recipientFile, looksLike(head, "it is not a custodian-recipient-v1 key line")),
					"--recipient is the agency's public key (agency.pub, from custodian agency keygen); its private identity (agency.key) never leaves the agency")
			}
			paths, err := warrantEnvelopePaths(envelopes, envelopeDirs)
			if err != nil {
				return err
			}
			if err := addEnvelopes(&w, paths); err != nil {
				return err
			}
			if listOut == "" && len(w.Envelopes) > warrant.MaxInlineEnvelopes {
				listOut = strings.TrimSuffix(out, filepath.Ext(out)) + ".envelopes"
			}
			list, listFile, err := detachEnvelopes(&w, listOut)
			if err != nil {
				return err
			}
			w.Version = 1
			w.Recipient = strings.TrimSuffix(string(pub), "\n")
			data, err := w.Marshal(maxValidity)
			if err != nil {
				return newWarrantRefused(err)
			}
			if list != nil {
				if err := mustNotExist("out", out); err != nil {
					return err
				}
				if err := writeNew("envelope-list", listOut, listFile, 0o644); err != nil {
					return err
				}
				if !g.json {
					g.printf("wrote %s: the list of the %s envelopes the warrant names; it goes with the signed warrant to every custodian (custodian release --envelope-list)\n",
						listOut, warrant.Thousands(w.EnvelopeList.Count))
				}
			}
			if err := writeNew("out", out, data, 0o644); err != nil {
				return err
			}
			if g.json {
				return g.printJSON(showJSON(&warrantFile{w: &w}, list))
			}
			g.printf("wrote %s:\n\n", out)
			printWarrant(g, &warrantFile{w: &w}, list, false)
			g.printf("\nRead it, and compare every group of the recipient's fingerprint with the one the agency gave you; then sign it:\n%s", signCommand(out))
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
	f.StringArrayVar(&envelopeDirs, "envelope-dir", nil, "directory whose *.env files are all named, as --envelope each, in name order (repeat)")
	f.StringVar(&listOut, "envelope-list", "", "new file for the envelope list: the warrant then names its envelopes by the list's tree hash and count (default: OUT with .envelopes, when there are more than 192)")
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
	case warrant.ReasonBadTime, warrant.ReasonBadWindow:
		return withHint(err, "times are RFC 3339, such as 2026-11-20T09:00:00Z")
	case warrant.ReasonWindowTooLong:
		return withHint(err, "shorten the window (--not-before to --not-after); the appliances refuse a longer one")
	}
	return err
}

// addEnvelopes names each envelope file in w, and its key ID and target
// where --key-id and --target did not.
func addEnvelopes(w *warrant.Warrant, paths []string) error {
	refs := make([]warrant.EnvelopeRef, len(paths))
	for i, path := range paths {
		ref, err := readEnvelopeRef(path)
		if err != nil {
			return err
		}
		refs[i] = ref
	}
	// The seal proofs, all at once: version 3 ones in one random linear
	// combination per CPU, a failure named by its file.
	if i, err := escrow.FirstFailure(escrow.CheckSealProofs(refs)); err != nil {
		return envelopeRefused(fmt.Errorf("%s: %w", paths[i], err))
	}
	first := make(map[string]string, len(paths)) // key ID and enc → file
	for i, path := range paths {
		ref := refs[i]
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

// warrantEnvelopePaths is the --envelope files, then each --envelope-dir's
// *.env files in name order.
func warrantEnvelopePaths(files, dirs []string) ([]string, error) {
	out := slices.Clone(files)
	for _, dir := range dirs {
		listed, err := envelopesIn(dir)
		if err != nil {
			return nil, err
		}
		if len(listed) == 0 {
			return nil, withHint(fmt.Errorf("--envelope-dir %s holds no *.env file", dir),
				"--envelope-dir is a directory of escrow envelopes (F.env) the messaging provider handed over; give single files with --envelope")
		}
		out = append(out, listed...)
	}
	return out, nil
}

// detachEnvelopes moves w's envelopes into a list and its file's bytes
// when listOut is set, naming the list in w by its tree hash and count.
func detachEnvelopes(w *warrant.Warrant, listOut string) (*warrant.EnvelopeList, []byte, error) {
	if listOut == "" {
		return nil, nil, nil
	}
	if len(w.Envelopes) == 0 {
		return nil, nil, badUsage(errors.New("--envelope-list needs envelopes: give --envelope or --envelope-dir"))
	}
	list, err := warrant.ListOf(w.Envelopes)
	if err != nil {
		return nil, nil, err
	}
	var b bytes.Buffer
	if _, err := list.WriteTo(&b); err != nil {
		return nil, nil, err
	}
	d := list.Digest()
	w.Envelopes, w.EnvelopeList = nil, &d
	return list, b.Bytes(), nil
}

// readEnvelopeList reads a list file for show and release ("" : none).
func readEnvelopeList(path string) (*warrant.EnvelopeList, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	l, err := warrant.ReadEnvelopeList(f)
	if err != nil {
		return nil, withHint(fmt.Errorf("%s: %w", path, err), "--envelope-list is the list file custodian warrant new wrote with the warrant")
	}
	return l, nil
}

// readEnvelopeRef reads an envelope file, leaving its seal proof to be
// checked with the others' (addEnvelopes). Its errors name the file.
func readEnvelopeRef(path string) (warrant.EnvelopeRef, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return warrant.EnvelopeRef{}, err
	}
	env, err := escrow.DecodeEnvelope(data)
	if err != nil {
		return warrant.EnvelopeRef{}, envelopeRefused(fmt.Errorf("%s: %w", path, err))
	}
	return env.Ref(), nil
}

// envelopeRefused explains why warrant new does not name an envelope.
func envelopeRefused(err error) error {
	err = unprovenHint(err)
	if len(hintsOf(err)) == 0 {
		err = withHint(err, "--envelope and --envelope-dir take escrow envelopes (F.env) as custodian escrow seal wrote them")
	}
	return err
}

type verifyOutput struct {
	Verified    bool               `json:"verified"`
	Addressed   bool               `json:"addressing_checked"`
	Digest      string             `json:"digest"`
	ReplayKey   warrant.ReplayKey  `json:"replay_key"`
	Warrant     *warrant.Warrant   `json:"warrant"`
	Signers     []warrant.Identity `json:"signers"`
	UsedChecked bool               `json:"used_checked,omitempty"` // the device's ledger was read
	// EnvelopesChecked: the envelopes fit each key ID's mode on this device.
	EnvelopesChecked bool `json:"envelopes_checked,omitempty"`
	// NotChecked names the device's checks that could not be made, and why;
	// verified is then false and reason is not_checked.
	NotChecked   []string       `json:"not_checked,omitempty"`
	UsedAt       *int64         `json:"used_at_entry,omitempty"` // the ledger entry that used the warrant
	RefusalCode  warrant.Reason `json:"reason,omitempty"`
	RefusalError string         `json:"error,omitempty"`
}

func newWarrantVerifyCommand(g *globals) *cobra.Command {
	var in, roots, court, custodian, listPath string
	var crls, keyIDs []string
	var maxValidity time.Duration
	cmd := &cobra.Command{
		Use:   "verify --in w.p7s [--roots F --court NAME --crl F] [--custodian ID --key-id K...]",
		Short: "Verify a signed warrant against the trust store (or given roots and CRLs)",
		Long: `Verify checks a signed warrant's signatures, chains, revocation, approval
policy and validity window against the data directory's trust store, or
against --roots, --court and --crl away from a device.

On a device (its data directory holds enrollment.json) without --roots, the
warrant is also checked as the device's daemon checks it before the officer
is asked to press: against this custodian's ID and the key IDs it holds (its
provisioned bundles; --key-id may name only those, --custodian another
custodian), against its ledger's replay floor (signed_before_floor) and
replay index (a warrant already used here is reported with the ledger entry
that used it), and its envelopes against each key ID's mode (a list warrant
needs --envelope-list). A refusal exits 1. When one of these checks cannot
be made (custodian serve holds the ledger, this user may not read it, it is
damaged, no --envelope-list), the warrant is not reported as verified: the
output names what was not checked and the exit status is 3. The ledger is
read as the file stands: a copy restored from before a release reads as
unused; only the daemon detects a rollback.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p7s, err := readCapped(in, maxWarrantFile)
			if err != nil {
				return err
			}
			store, err := verifyStore(g, roots, court, crls)
			if err != nil {
				return err
			}
			detached, err := readEnvelopeList(listPath)
			if err != nil {
				return err
			}
			onDevice := false
			if roots == "" {
				if custodian, keyIDs, onDevice, err = deviceAddressing(g.dataDir, custodian, keyIDs); err != nil {
					return err
				}
			}
			v := &warrant.Verifier{Trust: store, CustodianID: custodian, HeldKeyIDs: keyIDs, MaxValidity: maxValidity}
			var res *warrant.Verified
			if custodian != "" || len(keyIDs) != 0 {
				res, err = v.Verify(p7s)
			} else {
				res, err = v.VerifySignatures(p7s)
			}
			if err == nil && !onDevice && detached != nil {
				_, err = res.Warrant.List(detached) // a list given away from a device is still checked against the warrant
			}
			if err != nil {
				if g.json {
					g.printJSON(verifyOutput{RefusalCode: warrant.ReasonOf(err), RefusalError: err.Error()})
				}
				return signerHint(fmt.Errorf("warrant refused (%s): %w", warrant.ReasonOf(err), err))
			}
			var d *deviceVerdict
			if onDevice {
				verdict := checkOnDevice(g.dataDir, custodian, res, detached)
				d = &verdict
			}
			return printVerified(g, res, custodian, d)
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "signed warrant (CMS, DER)")
	f.StringVar(&roots, "roots", "", "court root certificates (PEM) to use instead of the trust store")
	f.StringVar(&court, "court", "", "with --roots: the court those roots are pinned for")
	f.StringArrayVar(&crls, "crl", nil, "CRL to use with --roots (repeat)")
	f.StringVar(&custodian, "custodian", "", "check the warrant addresses this custodian ID (on a device: its own, by default)")
	f.StringArrayVar(&keyIDs, "key-id", nil, "key ID held (repeat); with --custodian (on a device: the key IDs it holds, by default)")
	f.DurationVar(&maxValidity, "max-validity", warrant.DefaultMaxValidity, "longest validity span accepted")
	f.StringVar(&listPath, "envelope-list", "", "the envelope list the warrant names (on a device, its envelopes are checked against each key ID's mode)")
	cmd.MarkFlagRequired("in")
	return cmd
}

// deviceAddressing fills in the custodian ID and the key IDs a warrant is
// checked against from the data directory when it is a device's and the
// person named no other custodian: a device knows both, and asking for
// them invites a wrong answer. Key IDs given for the device's own ID must
// be ones it holds: any other is refused there (unknown_key_id). It
// reports whether dataDir is a device's.
func deviceAddressing(dataDir, custodian string, keyIDs []string) (string, []string, bool, error) {
	id, held, err := appliance.Held(dataDir)
	switch {
	case errors.Is(err, appliance.ErrNotEnrolled):
		return custodian, keyIDs, false, nil
	case errors.Is(err, fs.ErrPermission):
		return "", nil, false, withHint(fmt.Errorf("this user may not read this device's custodian ID and key IDs: %w", err),
			"run as root (the data directory's owner), e.g. sudo custodian warrant verify ...",
			"away from the device, check the warrant with --roots FILE --court NAME --crl FILE")
	case err != nil:
		return "", nil, false, withHint(fmt.Errorf("reading this device's custodian ID and key IDs: %w", err),
			"away from the device, check the warrant with --roots FILE --court NAME --crl FILE")
	}
	if custodian != "" && custodian != id {
		return custodian, keyIDs, false, nil // another custodian's view: this device's bundles and ledger do not apply
	}
	for _, k := range keyIDs {
		if !slices.Contains(held, k) {
			return "", nil, false, withHint(fmt.Errorf("--key-id %s: this device (%s) holds no share of it (it holds: %s), so it would refuse the warrant (unknown_key_id)", k, id, heldList(held)),
				"leave out --key-id to check against the key IDs this device holds, or add --custodian with another custodian's ID to check for that custodian")
		}
	}
	if len(keyIDs) == 0 {
		keyIDs = held
	}
	return id, keyIDs, true, nil
}

func heldList(held []string) string {
	if len(held) == 0 {
		return "none yet: custodian provision"
	}
	return strings.Join(held, ", ")
}

// deviceVerdict is what this device adds to a verified warrant: the checks
// the daemon makes before it asks the TPM anything — the replay floor, the
// replay index, and the envelopes against each key ID's mode — read
// without the TPM. A check that could not be made is named in notChecked,
// and the warrant is then not reported as verified.
type deviceVerdict struct {
	used       bool
	index      int64
	ledgerRead bool   // the replay floor and index were read
	envChecked bool   // the envelopes fit every key ID's mode
	usedLine   string // the Used: line
	envLine    string // the Envelopes: line
	// refused is the daemon's refusal, with its code; nil when none.
	refused error
	code    string
	// notChecked says what could not be checked and why; hints say how to
	// check it.
	notChecked []string
	hints      []string
}

// checkOnDevice runs on a verified warrant the checks the device's daemon
// runs before the summary that need no TPM, in the daemon's order:
// release.CheckFloor, the replay index, warrant.List and
// release.CheckEnvelopes.
func checkOnDevice(dataDir, id string, res *warrant.Verified, detached *warrant.EnvelopeList) deviceVerdict {
	var d deviceVerdict
	d.checkLedger(dataDir, res)
	if d.refused == nil {
		d.checkEnvelopes(dataDir, id, res.Warrant, detached)
	}
	return d
}

// checkLedger reads the replay floor and the replay index.
func (d *deviceVerdict) checkLedger(dataDir string, res *warrant.Verified) {
	const what = "whether it was used here, and the replay floor"
	rec, err := ledger.SeenIn(dataDir, []byte(res.Replay.String()))
	switch {
	case errors.Is(err, ledger.ErrNoLedger):
		d.usedLine = "no (this device has no ledger yet: custodian ledger init; it releases nothing without one)"
		return
	case errors.Is(err, ledger.ErrInUse):
		d.skip(what, "another custodian process holds the ledger (custodian serve, as on a running device)",
			"stop custodian serve for a moment and verify again, or submit the warrant: the daemon refuses a used one (replayed) or one signed before its replay floor (signed_before_floor)")
		return
	case errors.Is(err, ledger.ErrIndexUnclean):
		d.skip(what, "the ledger's index ("+filepath.Join(dataDir, ledger.FileName)+") was not closed cleanly, so it may be behind its journal",
			"start custodian serve, or run custodian ledger verify: either rebuilds it from the journal; then verify again")
		return
	case errors.Is(err, fs.ErrPermission):
		d.skip(what, "this user may not read the ledger ("+filepath.Join(dataDir, ledger.FileName)+")",
			"run as root (the data directory's owner), e.g. sudo custodian warrant verify ...")
		return
	case err != nil:
		d.skip(what, "the ledger file is damaged or is not a ledger ("+filepath.Join(dataDir, ledger.FileName)+"); the daemon rebuilds it from its journal if that is whole, and refuses every warrant otherwise",
			"custodian ledger verify checks the ledger (stop custodian serve first); docs/operator.md tells how to restore it")
		return
	}
	d.ledgerRead = true
	if code, err := release.CheckFloor(res.Signers, rec.Floor); err != nil {
		d.usedLine = "not in this device's ledger, but signed before its replay floor"
		d.refused, d.code = err, string(code)
		return
	}
	if rec.Seen {
		d.used, d.index = true, rec.Index
		d.usedLine = fmt.Sprintf("yes, ledger entry %d", rec.Index)
		d.refused = withHint(fmt.Errorf("warrant already used on this device: ledger entry %d records it, and a new submission is refused (replayed)", rec.Index),
			fmt.Sprintf("custodian ledger prove --index %d shows the entry; a new release needs a new warrant", rec.Index))
		d.code = "replayed"
		return
	}
	d.usedLine = "no (not in this device's ledger)"
}

// checkEnvelopes checks the envelopes the warrant names, inline or by the
// detached list, against the mode of each key ID's bundle, as the daemon
// does with the same function.
func (d *deviceVerdict) checkEnvelopes(dataDir, id string, w *warrant.Warrant, detached *warrant.EnvelopeList) {
	const what = "the envelopes against each key ID's mode"
	if w.EnvelopeList != nil && detached == nil {
		d.skip(what, "the warrant names its envelopes by a list, and no --envelope-list was given",
			"add --envelope-list with the list file custodian warrant new wrote beside the warrant")
		return
	}
	list, err := w.List(detached)
	if err != nil {
		d.envLine = "the envelope list does not go with this warrant"
		d.refused, d.code = err, string(warrant.ReasonOf(err))
		return
	}
	a := &appliance.Appliance{Dir: dataDir, ID: id}
	for _, k := range w.KeyIDs {
		b, err := a.Bundle(k)
		if errors.Is(err, fs.ErrPermission) {
			d.skip(what, "this user may not read the bundle of key ID "+k,
				"run as root (the data directory's owner), e.g. sudo custodian warrant verify ...")
			return
		}
		if err != nil {
			d.envLine = "key ID " + k + " has no readable share here"
			d.refused, d.code = err, string(release.CodeNoShare)
			return
		}
		if code, err := release.CheckEnvelopes(list, b); err != nil {
			d.envLine = "do not fit key ID " + k + "'s mode"
			d.refused, d.code = err, string(code)
			return
		}
	}
	d.envChecked = true
	d.envLine = "fit each key ID's mode (" + strings.Join(w.KeyIDs, ", ") + ")"
}

// skip records a check that could not be made.
func (d *deviceVerdict) skip(what, why, hint string) {
	d.notChecked = append(d.notChecked, what+": "+why)
	d.hints = append(d.hints, hint)
}

// errNotChecked is warrant verify's error when a check the device makes
// could not be made: its exit status (3) tells a script "not checked"
// from "refused" (1).
type errNotChecked struct{ err error }

func (e *errNotChecked) Error() string { return e.err.Error() }
func (e *errNotChecked) Unwrap() error { return e.err }
func (e *errNotChecked) ExitCode() int { return 3 }

// verdictError is the error warrant verify ends with for the device's
// verdict d (nil: verified).
func verdictError(custodian string, d *deviceVerdict) error {
	switch {
	case d.refused != nil:
		if d.code == "replayed" {
			return d.refused
		}
		return signerHint(withHint(fmt.Errorf("warrant refused on this device (%s): %w", d.code, d.refused), refusalHints[d.code]...))
	case len(d.notChecked) > 0:
		err := fmt.Errorf("not verified for custodian %s: signatures, chain, revocation, policy, window and addressing pass, but not checked: %s",
			custodian, strings.Join(d.notChecked, "; "))
		return withHint(&errNotChecked{err}, d.hints...)
	}
	return nil
}

// refusalHints advise on the device refusals warrant verify reports.
var refusalHints = map[string][]string{
	string(release.CodeBeforeFloor):      {"the device refuses it as the daemon would: the court signs the warrant again (a fresh signature dates after the floor)"},
	string(release.CodeNoEnvelopes):      {"a scoped key ID releases only the envelopes a warrant names: make the warrant again with --envelope or --envelope-dir (custodian warrant new)"},
	string(release.CodeNotScoped):        {"a share-mode key ID releases the whole share: make the warrant again without envelopes for it"},
	string(warrant.ReasonListMismatch):   {"--envelope-list must be the list file custodian warrant new wrote with this warrant"},
	string(warrant.ReasonListUnexpected): {"the warrant names no envelope list: leave out --envelope-list"},
}

// printVerified reports a warrant that verified, and refuses one the
// device's verdict refuses or could not check: VERIFIED would tell a
// trust admin it can still be released.
func printVerified(g *globals, res *warrant.Verified, custodian string, d *deviceVerdict) error {
	if d == nil {
		d = &deviceVerdict{}
	}
	err := verdictError(custodian, d)
	if g.json {
		out := verifyOutput{Verified: err == nil, Addressed: custodian != "", Digest: fmt.Sprintf("%x", res.Digest),
			ReplayKey: res.Replay, Warrant: res.Warrant, Signers: res.Signers, NotChecked: d.notChecked}
		out.UsedChecked, out.EnvelopesChecked = d.ledgerRead, d.envChecked
		if d.used {
			out.UsedAt = &d.index
		}
		switch {
		case d.refused != nil:
			out.RefusalCode, out.RefusalError = warrant.Reason(d.code), err.Error()
		case err != nil:
			out.RefusalCode, out.RefusalError = "not_checked", err.Error()
		}
		if perr := g.printJSON(out); perr != nil {
			return perr
		}
		return err
	}
	printWarrant(g, &warrantFile{w: res.Warrant, signers: res.Signers, signed: true}, nil, false)
	g.printf("Replay key: %s\nDigest:     %x\n", res.Replay, res.Digest)
	if d.usedLine != "" {
		g.printf("Used:       %s\n", d.usedLine)
	}
	if d.envLine != "" {
		g.printf("Envelopes:  %s\n", d.envLine)
	}
	for _, n := range d.notChecked {
		g.printf("Not checked: %s\n", n)
	}
	switch {
	case err != nil:
		return err
	case custodian == "":
		g.printf("VERIFIED (signatures, chain, revocation, policy, window); custodian and key IDs not checked: pass --custodian and --key-id\n")
	default:
		g.printf("VERIFIED for custodian %s\n", custodian)
	}
	return nil
}

// verifyStore is the data dir's trust store, or an in-memory one made of
// --roots, pinned for --court, and --crl.
func verifyStore(g *globals, roots, court string, crls []string) (*trust.Store, error) {
	return verifyStoreAt(g, roots, court, crls, time.Now())
}

// verifyStoreAt is verifyStore with --crl checked as of at: a CRL in
// force then (ledger verify-opening checks a warrant as of its entry).
func verifyStoreAt(g *globals, roots, court string, crls []string, at time.Time) (*trust.Store, error) {
	if roots == "" {
		if len(crls) != 0 || court != "" {
			return nil, badUsage(errors.New("--crl and --court need --roots; the trust store has its own CRLs and courts (custodian trust list)"))
		}
		if !isDir(g.dataDir) {
			return nil, withHint(fmt.Errorf("there is no data directory %s, so no trust store to check the warrant against", g.dataDir),
				`away from a device, pass --roots FILE --court "NAME" --crl FILE (the court's root certificates, its name and its CRL)`,
				"on a device, give its --data-dir")
		}
		return trust.Open(trustDir(g))
	}
	if court == "" {
		return nil, withHint(errors.New("--roots needs --court: a root verifies only the warrants of the court it is pinned for"),
			`add --court "NAME" as the court's warrants write it`)
	}
	certs, err := readCertificates(roots)
	if err != nil {
		return nil, withHint(err, "--roots is the court's root CA certificates (PEM or DER), as the court's trust admin publishes them")
	}
	s := trust.New()
	for _, c := range certs {
		if _, err := s.AddRoot(c.Raw, court); err != nil {
			return nil, err
		}
	}
	for _, path := range crls {
		data, err := readCapped(path, maxCertFile)
		if err != nil {
			return nil, err
		}
		if err := checkPEMOrDER("--crl", path, data, "X509 CRL", "a CRL"); err != nil {
			return nil, err
		}
		if _, err := s.SetCRL(data, at); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return s, nil
}

func newWarrantShowCommand(g *globals) *cobra.Command {
	var in, listPath string
	var fullKey bool
	cmd := &cobra.Command{
		Use:   "show (w.json | w.p7s) [--envelope-list w.envelopes] [--recipient-key]",
		Short: "Print the summary the court officer sees, of a warrant before or after signing (no trust decision)",
		Long: "Print the summary the appliance shows the court officer, of the warrant document custodian warrant new\n" +
			"wrote (before signing) or of a signed warrant. The recipient is named by its fingerprint; --recipient-key\n" +
			"adds the full key. Signatures are checked against their certificates only: trust is custodian warrant verify's.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := oneFileArg(args, in, "--in")
			if err != nil {
				return withHint(err, "custodian warrant show w.json (or w.p7s)")
			}
			wf, err := readWarrantFile(path)
			if err != nil {
				return err
			}
			detached, err := readEnvelopeList(listPath)
			if err != nil {
				return err
			}
			var list *warrant.EnvelopeList
			if detached != nil || wf.w.EnvelopeList == nil {
				// Without the list, a warrant that names one shows its count.
				if list, err = wf.w.List(detached); err != nil {
					return fmt.Errorf("the envelope list does not go with this warrant (%s): %w", warrant.ReasonOf(err), err)
				}
			}
			if g.json {
				return g.printJSON(showJSON(wf, list))
			}
			printWarrant(g, wf, list, fullKey)
			if wf.w.EnvelopeList != nil && list == nil {
				g.printf("(the envelopes per target are shown with --envelope-list)\n")
			}
			if !wf.signed {
				g.printf("NOT SIGNED: the document a judge signs; read it, then sign it:\n%s", signCommand(path))
				return nil
			}
			g.printf("NOT VERIFIED: signatures match their certificates; trust is checked by custodian warrant verify\n")
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "the warrant: JSON from custodian warrant new, or signed (CMS, DER); or give it as the argument")
	cmd.Flags().StringVar(&listPath, "envelope-list", "", "the envelope list the warrant names (checked against its tree hash and count)")
	cmd.Flags().BoolVar(&fullKey, "recipient-key", false, "also print the recipient's full public key")
	return cmd
}

// oneFileArg is the file named by the argument or by flag, not both.
func oneFileArg(args []string, flagValue, flag string) (string, error) {
	switch {
	case len(args) == 1 && flagValue != "":
		return "", fmt.Errorf("give the file as the argument or with %s, not both", flag)
	case len(args) == 1:
		return args[0], nil
	case flagValue != "":
		return flagValue, nil
	}
	return "", errors.New("name the warrant file")
}

// warrantFile is a warrant as a file holds it: the document warrant new
// writes, or a signed warrant with its signers (checked against their
// certificates only).
type warrantFile struct {
	w       *warrant.Warrant
	signers []warrant.Identity
	signed  bool
	data    []byte
}

// readWarrantFile reads either kind of warrant file. A JSON document is
// read as Parse reads it; anything else must be a signed warrant (CMS,
// DER), which is tried before PEM: a certificate inside it may hold PEM
// text. A file that is neither gets an error saying what it is not.
func readWarrantFile(path string) (*warrantFile, error) {
	data, err := readCapped(path, maxWarrantFile)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(data)
	switch {
	case bytes.HasPrefix(data, []byte("\xef\xbb\xbf")):
		return nil, withHint(fmt.Errorf("%s starts with a byte order mark (an editor saved it so); a warrant document is plain UTF-8 as custodian warrant new writes it", path),
			"write it again with custodian warrant new; an edited w.json is not what the judge would sign")
	case bytes.HasPrefix(trimmed, []byte("{")):
		w, err := warrant.Parse(data, 0)
		if err != nil {
			return nil, withHint(fmt.Errorf("%s: cannot read the warrant document (%s): %w", path, warrant.ReasonOf(err), err),
				"write the warrant with custodian warrant new")
		}
		return &warrantFile{w: w, data: data}, nil
	case certfile.IsPEM(data) && !certfile.MaybeDER(data):
		return nil, pemWarrantError(path, data)
	case !certfile.MaybeDER(data):
		return nil, withHint(fmt.Errorf("%s is neither a warrant document (JSON) nor a signed warrant (CMS)", path),
			"give the w.json custodian warrant new wrote, or the w.p7s custodian warrant sign wrote")
	}
	w, signers, err := warrant.Inspect(data)
	if err != nil && certfile.IsPEM(data) {
		return nil, pemWarrantError(path, data)
	}
	if err != nil {
		return nil, withHint(fmt.Errorf("%s: cannot read the signed warrant (%s): %w", path, warrant.ReasonOf(err), err),
			"give the w.p7s custodian warrant sign wrote, as it wrote it")
	}
	return &warrantFile{w: w, signers: signers, signed: true, data: data}, nil
}

// signCommand is the whole warrant sign command for the document at path,
// every required flag given: the card's module and token label are the
// judge's own, so they stay named placeholders (docs/judge.md section 3).
func signCommand(path string) string {
	out := strings.TrimSuffix(path, ".json") + ".p7s"
	return fmt.Sprintf("  custodian warrant sign --in %s --module \"$M\" --key 'pkcs11:token=<token label>;object=SIGN%%20key' --out %s\n"+
		"  (M: your card's PKCS#11 module, such as /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so; <token label>: your card's, with %%20 for each space)\n",
		shellQuote(path), shellQuote(out))
}

// pemWarrantError explains a PEM file given as a warrant: a signed
// warrant in PEM (openssl cms -outform PEM) converts to DER; anything
// else (a certificate, a key) is not a warrant.
func pemWarrantError(path string, data []byte) error {
	blocks, err := certfile.Blocks(data)
	if err == nil && (blocks[0].Type == "PKCS7" || blocks[0].Type == "CMS") {
		return withHint(fmt.Errorf("%s is a signed warrant in PEM; custodian reads it in DER (binary CMS), as custodian warrant sign writes it", path),
			"convert it: openssl cms -cmsout -inform PEM -in "+path+" -outform DER -out converted.p7s, then give converted.p7s")
	}
	return withHint(fmt.Errorf("%s is a PEM file (a certificate or a key?), not a warrant", path),
		"give the w.json custodian warrant new wrote, or the w.p7s custodian warrant sign wrote")
}

// printWarrant writes the summary the appliance shows, then what a
// person at a terminal checks it against: the full recipient key when
// asked for, and each signer's certificate fingerprint in the project's
// form and openssl's.
func printWarrant(g *globals, wf *warrantFile, list *warrant.EnvelopeList, fullKey bool) {
	g.printf("%s", warrant.SummaryWithList(wf.w, list, wf.signers))
	if fullKey {
		g.printf("%-11s %s\n", "Recipient key:", wf.w.Recipient)
	}
	for _, s := range wf.signers {
		g.printf("%-11s %s: %s\n", "Certificate", warrant.DisplayName(s.Name), certfile.Fingerprints(s.Certificate))
	}
}

// showJSON is what show --json (and new --json) print.
func showJSON(wf *warrantFile, list *warrant.EnvelopeList) map[string]any {
	signers := wf.signers
	if signers == nil {
		signers = []warrant.Identity{}
	}
	return map[string]any{"warrant": wf.w, "signed": wf.signed, "signers": signers, "trust_checked": false,
		"recipient_fingerprint": wf.w.RecipientKey().Fingerprint(), "envelopes": listJSON(wf.w, list)}
}

// listJSON is what show --json says of the envelopes: their number, per
// target, and the span, which is the warrant's window (envelopes carry no
// sealing time).
func listJSON(w *warrant.Warrant, list *warrant.EnvelopeList) any {
	if list == nil {
		return nil
	}
	per := map[string]int{}
	for _, e := range list.Entries {
		per[e.Target]++
	}
	return map[string]any{"count": list.Count(), "per_target": per, "tree_hash": fmt.Sprintf("%x", list.TreeHash[:]),
		"span": map[string]string{"from": w.NotBefore, "to": w.NotAfter}}
}

// shellQuote writes s so that a shell reads it as one word: as it is when
// it holds only characters no shell treats specially, else in single
// quotes.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-+:=@,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
