package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/warrant"
)

func newLedgerRevealCommand(g *globals) *cobra.Command {
	var saltsPath, warrantPath, listPath, out string
	var index int64
	remote := remoteLedger{g: g}
	cmd := &cobra.Command{
		Use:   "reveal --salts F --warrant w.p7s [--index N] --out opening.json",
		Short: "Court: open a ledger entry with the salt kept at release, so anyone can check which warrant it was about",
		Long: `Writes an opening of one ledger entry: the entry with its inclusion proof
and signed checkpoint, the salt custodian release kept for it (--salts), and
the signed warrant the entry committed to. Anyone checks it with custodian
ledger verify-opening and the appliance's verifier key.

custodian release keeps the salts of a request's entries (court-a.release.salts.json
beside court-a.release.json) when the appliance requires a court officer's
certificate; the appliance gives them only to the certificate that submitted it.
A salt that does not open the entry is refused, as is a salts file of another
warrant. Warrants carry no unseal date: the court decides when its sealing
period is over, and runs this then. Publishing an opening tells everyone who
reads the ledger which court, docket and targets the entry served.

A scoped release entry commits to the warrant's envelope list too: give
--envelope-list when the warrant names its envelopes by a list file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := readReveal(saltsPath, warrantPath, listPath, out)
			if err != nil {
				return err
			}
			if r.index, err = r.pick(index, cmd.Flags().Changed("index")); err != nil {
				return err
			}
			if remote.enabled() {
				inc, err := remote.prove(cmd.Context(), r.index)
				if err != nil {
					return err
				}
				key, _ := remote.verifier() // prove checked it
				return r.write(g, inc, key, out)
			}
			if err := remote.refuseLocal(cmd); err != nil {
				return err
			}
			return g.withAppliance(func(a *appliance.Appliance, _ transport.TPM) error {
				if a.SignerErr != nil {
					return keyHint(a.SignerErr)
				}
				inc, err := a.Ledger.Prove(r.index)
				if err != nil {
					return withHint(err, fmt.Sprintf("this ledger holds entries 0 to %d", a.Ledger.Size()-1))
				}
				return r.write(g, inc, a.VerifierKey, out)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&saltsPath, "salts", "", "the salts file custodian release kept (beside its --out, ending .salts.json)")
	f.StringVar(&warrantPath, "warrant", "", "the signed warrant the entry is about (DER CMS)")
	f.StringVar(&listPath, "envelope-list", "", "the warrant's envelope list file, for a scoped release entry of a warrant that names its envelopes by a list")
	f.Int64Var(&index, "index", -1, "the entry to open (needed when the salts file holds several)")
	f.StringVar(&out, "out", "", "where to write the opening (JSON)")
	for _, name := range []string{"salts", "warrant", "out"} {
		_ = cmd.MarkFlagRequired(name)
	}
	remote.flags(cmd)
	return cmd
}

// reveal is what the court brings to open an entry.
type reveal struct {
	salts *opening.SaltsFile
	p7s   []byte
	lists []*warrant.ListDigest // the subjects to try: nil (the warrant alone), then the list's
	index int64
}

func readReveal(saltsPath, warrantPath, listPath, out string) (*reveal, error) {
	if err := durable.CheckReplaceable(out); err != nil {
		return nil, err
	}
	data, err := readCapped(saltsPath, opening.MaxSaltsFile)
	if err != nil {
		return nil, err
	}
	salts, err := opening.ParseSaltsFile(data)
	if err != nil {
		return nil, withHint(err, "--salts is the .salts.json file custodian release kept beside the package")
	}
	wf, err := readWarrantFile(warrantPath)
	if err != nil {
		return nil, err
	}
	if !wf.signed {
		return nil, withHint(fmt.Errorf("%s is a warrant document, not the signed warrant", warrantPath),
			"give the w.p7s custodian release submitted: the entry committed to its signed bytes")
	}
	digest := warrant.Digest(contentOf(wf.data))
	if d := hex.EncodeToString(digest[:]); d != salts.WarrantDigest {
		return nil, withHint(fmt.Errorf("%w: the salts file is for the warrant of digest %s…, not for %s (digest %s…)",
			opening.ErrSubjectMismatch, salts.WarrantDigest[:16], warrantPath, d[:16]),
			"give the warrant custodian release submitted when it kept this salts file")
	}
	r := &reveal{salts: salts, p7s: wf.data, lists: []*warrant.ListDigest{nil}}
	var detached *warrant.EnvelopeList
	if listPath != "" {
		if detached, err = readEnvelopeList(listPath); err != nil {
			return nil, err
		}
	}
	if list, err := wf.w.List(detached); err != nil && listPath != "" {
		return nil, fmt.Errorf("--envelope-list: %w", err)
	} else if err == nil && list != nil {
		d := list.Digest()
		r.lists = append(r.lists, &d)
	}
	return r, nil
}

// pick is the entry to open: --index, which the file must hold a salt
// for, or the file's one entry.
func (r *reveal) pick(index int64, given bool) (int64, error) {
	held := make([]string, len(r.salts.Salts))
	for i, s := range r.salts.Salts {
		held[i] = strconv.FormatInt(s.Index, 10)
	}
	switch {
	case given:
		if _, ok := r.salts.Lookup(index); !ok {
			return 0, withHint(fmt.Errorf("the salts file holds no salt for entry %d", index),
				"it holds the salts of entries "+strings.Join(held, ", ")+": give one of those to --index")
		}
		return index, nil
	case len(r.salts.Salts) == 1:
		return r.salts.Salts[0].Index, nil
	}
	return 0, withHint(errors.New("the salts file holds several entries' salts"), "choose one with --index: "+strings.Join(held, ", "))
}

// write checks the opening of the entry inc proves against key before it
// writes it: a salt that does not open the entry is refused.
func (r *reveal) write(g *globals, inc *ledger.Inclusion, key, out string) error {
	salt, _ := r.salts.Lookup(r.index)
	var opened *opening.Opened
	var o *opening.Opening
	var err error
	for _, list := range r.lists {
		o = opening.New(inc, salt, r.p7s, list)
		if opened, err = opening.Check(o, key, nil); !errors.Is(err, opening.ErrNotOpened) {
			break
		}
	}
	switch {
	case errors.Is(err, opening.ErrNotOpened):
		hint := "the salts file is this warrant's, so its salt for this entry is wrong: was the file edited, or is --server another appliance?"
		if len(r.lists) == 1 && r.mayNeedList() {
			hint = "a scoped release entry commits to the envelope list too: add --envelope-list with the warrant's list file"
		}
		return withHint(fmt.Errorf("the salt the salts file holds for entry %d does not open it: %w", r.index, err), hint)
	case err != nil:
		return err
	}
	data, err := o.Marshal()
	if err != nil {
		return err
	}
	if err := durable.WriteFile(out, data, 0o644); err != nil {
		return err
	}
	g.printf("opened entry %d of %s (%s, %s): warrant %s of %s, docket %s; saved %s\n",
		opened.Index, opened.Origin, opened.Entry.Kind, opened.Entry.Time.Format(time.RFC3339),
		warrant.DisplayName(opened.Warrant.Serial), warrant.DisplayName(opened.Warrant.Court), warrant.DisplayName(opened.Warrant.Docket), out)
	g.printf("publishing it tells anyone which warrant the entry served; the court decides when its sealing is over\n")
	return nil
}

// mayNeedList reports whether the warrant names a list the court did not
// give.
func (r *reveal) mayNeedList() bool {
	w, _, err := warrant.Inspect(r.p7s)
	return err == nil && w.EnvelopeList != nil
}

func newLedgerVerifyOpeningCommand(g *globals) *cobra.Command {
	var in, key, roots, court string
	var crls []string
	cmd := &cobra.Command{
		Use:   "verify-opening --in opening.json --verifier-key K [--roots F --court NAME --crl F]",
		Short: "Check a court's opening of a ledger entry: in the ledger, opened by its salt, the warrant of its court",
		Long: `Checks an opening that custodian ledger reveal wrote, with nothing but the
appliance's pinned verifier key: the checkpoint is signed by it, the entry is
in the tree it signs, the salt and the warrant open the entry's commitment,
and the warrant names this custodian and the entry's key ID (a refusal
entry's warrant need not name this custodian: one addressed elsewhere is
itself refused).

With --roots, --court and --crl it also verifies the warrant against the
court's PKI as of the entry's time, when the appliance acted on it (give a
CRL that was in force then), under the default approval policy (one signer,
the default key usages), not the policy the appliance enforced. Without them
it checks the warrant's signatures against the certificates it carries, and
says the court was not checked.

The output says what the opening proves. A refusal entry's salt goes to
whoever submitted those bytes, so its opening shows only that a copy of the
warrant was submitted and refused at the entry's time, not that the court
submitted or published it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := rootsGiven(roots, court, crls, "the warrant"); err != nil {
				return err
			}
			vk, err := readKeyArg("verifier-key", key)
			if err != nil {
				return err
			}
			if err := checkVerifierKey("verifier-key", vk); err != nil {
				return err
			}
			data, err := readCapped(in, opening.MaxSize)
			if err != nil {
				return err
			}
			o, err := opening.Parse(data)
			if err != nil {
				return withHint(err, "--in is an opening file that custodian ledger reveal wrote")
			}
			opened, err := checkOpening(g, o, vk, roots, court, crls, "")
			if err != nil {
				return err
			}
			return printOpened(g, opened, o.Entry)
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "the opening file")
	f.StringVar(&key, "verifier-key", "", "the appliance's pinned checkpoint verifier key, or a file holding it (ledger-key.pub)")
	f.StringVar(&roots, "roots", "", "the court's root certificates (PEM), to verify the warrant against its court")
	f.StringVar(&court, "court", "", "with --roots: the court those roots are pinned for")
	f.StringArrayVar(&crls, "crl", nil, "with --roots: the court's CRL in force at the entry's time (repeat)")
	for _, name := range []string{"in", "verifier-key"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func openingHint(err error) error {
	switch {
	case errors.Is(err, opening.ErrNotInLedger):
		return withHint(err, "check that --verifier-key is the appliance's pinned ledger-key.pub; an opening whose entry or proof was changed does not verify")
	case errors.Is(err, opening.ErrNotOpened):
		return withHint(err, "the opening does not show which warrant the entry was about: ask the court that published it")
	case errors.Is(err, opening.ErrCourtUnverified):
		return withHint(err, "check --roots, --court and that --crl was in force at the entry's time")
	}
	return err
}

// openedJSON is verify-opening's --json output: the entry as ledger list
// --json prints it, and what the opening shows of the warrant.
type openedJSON struct {
	Origin        string              `json:"origin"`
	TreeSize      int64               `json:"tree_size"`
	Entry         listed              `json:"entry"`
	Court         string              `json:"court"`
	Docket        string              `json:"docket"`
	Serial        string              `json:"serial"`
	Signers       []string            `json:"signers"`
	EnvelopeList  *warrant.ListDigest `json:"envelope_list,omitempty"`
	CourtVerified bool                `json:"court_verified"`
	// Checked and Shows are the text lines saying what was checked of
	// the court and what the opening proves.
	Checked string `json:"checked"`
	Shows   string `json:"shows"`
}

func printOpened(g *globals, o *opening.Opened, entry string) error {
	names := make([]string, len(o.Signers))
	for i, s := range o.Signers {
		names[i] = warrant.DisplayName(s.Name)
	}
	if g.json {
		w := o.Warrant
		return g.printJSON(openedJSON{Origin: o.Origin, TreeSize: o.TreeSize, Entry: describe(ledger.RangeEntry{Index: o.Index, Entry: entry}, o.Entry),
			Court: w.Court, Docket: w.Docket, Serial: w.Serial, Signers: names, EnvelopeList: o.EnvelopeList, CourtVerified: o.CourtVerified,
			Checked: courtChecked(o.CourtVerified), Shows: openingShows(o)})
	}
	e, w := o.Entry, o.Warrant
	var b bytes.Buffer
	fmt.Fprintf(&b, "entry %d of %s (in its tree of %d entries) opens: %s at %s", o.Index, o.Origin, o.TreeSize, e.Kind, e.Time.Format(time.RFC3339))
	if e.KeyID != "" {
		fmt.Fprintf(&b, ", key ID %s", e.KeyID)
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, ", reason %s", e.Reason)
	}
	fmt.Fprintf(&b, "\nwarrant %s, court %s, docket %s, signed by %s\n", warrant.DisplayName(w.Serial),
		warrant.DisplayName(w.Court), warrant.DisplayName(w.Docket), strings.Join(names, ", "))
	if o.EnvelopeList != nil {
		// The entry commits to the whole list's digest: how many of its
		// envelopes are of this key ID takes the list itself.
		fmt.Fprintf(&b, "envelope list: the warrant's whole list, %s envelopes of every key ID it names\n", warrant.Thousands(o.EnvelopeList.Count))
	}
	b.WriteString(courtChecked(o.CourtVerified) + "\n")
	b.WriteString(openingShows(o) + "\n")
	g.printf("%s", b.String())
	return nil
}

// courtChecked says what was checked of the warrant's court.
func courtChecked(verified bool) string {
	if !verified {
		return "the court was not checked (its signatures match the certificates it carries): give --roots, --court and --crl to check it"
	}
	return "the warrant verifies against the court's roots as of the entry's time: signatures, chain to the roots given, revocation by the CRLs given, and the default approval policy (one signer, the default key usages), not the policy the appliance enforced"
}

// openingShows says what the opening proves of who stood behind the entry.
// A refusal's salt goes to whoever submitted the warrant's bytes, who need
// not be its court (docs/threat-model.md, "Salts").
func openingShows(o *opening.Opened) string {
	if o.Entry.Kind == ledger.KindRefusal && o.Entry.Reason == ledger.ReasonInterrupted {
		return fmt.Sprintf("it shows that custodian %s approved this warrant with the officer's press and stopped before releasing key ID %s: the refusal was logged at its next start, %s",
			o.Custodian(), o.Entry.KeyID, o.Entry.Time.Format(time.RFC3339))
	}
	if o.Entry.Kind == ledger.KindRefusal {
		return fmt.Sprintf("it shows only that a copy of this warrant was submitted to custodian %s and refused at %s: whoever submitted it held a copy, not necessarily the court, and the opening does not show that the court submitted or published it",
			o.Custodian(), o.Entry.Time.Format(time.RFC3339))
	}
	return fmt.Sprintf("it shows that custodian %s logged a %s of this warrant at %s, after the officer's press", o.Custodian(), o.Entry.Kind, o.Entry.Time.Format(time.RFC3339))
}

// rootsGiven refuses --court or --crl without the --roots they check
// what (the warrant, or the opened warrants) against.
func rootsGiven(roots, court string, crls []string, what string) error {
	if roots == "" && (court != "" || len(crls) != 0) {
		return withHint(fmt.Errorf("--court and --crl check %s against the court's roots, and --roots is missing", what),
			`add --roots FILE (the court's root certificates) beside --court "NAME" and --crl FILE`)
	}
	return nil
}

// checkOpening checks o against the ledger's verifier key, then, with
// roots, its warrant against the court as of the entry's time (the CRLs
// in force then). An opening that fails is named by label ("" for none).
func checkOpening(g *globals, o *opening.Opening, key, roots, court string, crls []string, label string) (*opening.Opened, error) {
	opened, err := opening.Check(o, key, nil)
	if err == nil && roots != "" {
		store, serr := verifyStoreAt(g, roots, court, crls, opened.Entry.Time)
		if serr != nil {
			return nil, serr
		}
		opened, err = opening.Check(o, key, store)
	}
	if err != nil {
		if label != "" {
			err = fmt.Errorf("%s: %w", label, err)
		}
		return nil, openingHint(err)
	}
	return opened, nil
}
