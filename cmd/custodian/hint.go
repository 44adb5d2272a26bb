package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/tpm"
)

// hinted is an error that carries advice for the person at the terminal.
// Packages return plain errors; only the command layer knows what the user
// typed and can say what to do next.
type hinted struct {
	err   error
	hints []string
}

func (h *hinted) Error() string { return h.err.Error() }
func (h *hinted) Unwrap() error { return h.err }

// withHint attaches hints to err. A nil err stays nil.
func withHint(err error, hints ...string) error {
	if err == nil {
		return nil
	}
	return &hinted{err: err, hints: hints}
}

// hintsOf collects the hints attached anywhere in err's chain.
func hintsOf(err error) []string {
	var out []string
	for err != nil {
		var h *hinted
		if !errors.As(err, &h) {
			break
		}
		out = append(out, h.hints...)
		err = h.err
	}
	return out
}

// explainOS adds the advice every command shares for what the operating
// system refused: a file that is not there, a directory where a file was
// wanted, a file this user may not open. A command that knows better
// attached its own hint already, and that one stands alone.
func explainOS(err error) error {
	var pe *fs.PathError
	if len(hintsOf(err)) > 0 || !errors.As(err, &pe) {
		return err
	}
	dir := filepath.Dir(pe.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !isDir(dir):
		return withHint(err, "check the name: there is no directory "+dir+" (a relative name starts from the current directory)")
	case errors.Is(err, fs.ErrNotExist):
		return withHint(err, "check the name: there is no "+pe.Path+" (a relative name starts from the current directory)")
	case errors.Is(err, syscall.ENOTDIR):
		return withHint(err, "a name in "+pe.Path+" that should be a directory is a file: check the path (and --data-dir)")
	case errors.Is(err, syscall.EISDIR):
		return withHint(err, pe.Path+" is a directory: give the file in it")
	case errors.Is(err, fs.ErrPermission):
		return withHint(err, "this user may not open "+pe.Path+": check its owner and mode (ls -l "+pe.Path+"), or run as the user it is meant for")
	}
	return err
}

// usageError is a command line that does not fit its command: a flag the
// parser refused, or flags a command checked against each other.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// badUsage marks err as a command line that does not fit its command, so
// that it points to the command's help.
func badUsage(err error) error { return usageError{err} }

// flagError says what a flag's value should have been, in place of the
// parser's words ("strconv.ParseInt: parsing ...: invalid syntax"). Every
// error the flag parser returns comes here, and is a usage error.
func flagError(cmd *cobra.Command, err error) error {
	var bad *pflag.InvalidValueError
	if !errors.As(err, &bad) {
		return badUsage(err)
	}
	want, ok := flagTypes[bad.GetFlag().Value.Type()]
	if !ok {
		return badUsage(err) // a value type of its own, whose error says what it wants
	}
	return badUsage(fmt.Errorf("--%s %q: want %s", bad.GetFlag().Name, bad.GetValue(), want))
}

// flagTypes names the values of the flag types the commands use.
var flagTypes = map[string]string{
	"int": "a whole number", "int64": "a whole number", "uint": "a whole number from 0", "uint64": "a whole number from 0",
	"duration": "a duration such as 30s, 5m or 2h", "bool": "true or false", "float64": "a number",
}

// usageErrors are how cobra begins the errors of a command line that does
// not fit the command, beyond the flag parser's (flagError): its argument
// counts, required flags and flag groups.
var usageErrors = []string{"accepts ", "unknown command", "required flag", "requires at least",
	"if any flags in the group", "at least one of the flags in the group"}

// usageHint points a command line that does not fit its command to the
// command's help, unless the error already carries advice. Other errors,
// even those that begin with a flag's name (--old: the checkpoint does not
// verify), are about what the flag named, and get no such pointer.
func usageHint(cmd *cobra.Command, err error) error {
	if cmd == nil || len(hintsOf(err)) > 0 {
		return err
	}
	var u usageError
	if errors.As(err, &u) || slices.ContainsFunc(usageErrors, func(prefix string) bool { return strings.HasPrefix(err.Error(), prefix) }) {
		return withHint(err, cmd.CommandPath()+" --help shows how to call it")
	}
	return err
}

func isDir(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}

// signerHints advise on refusals of who signed a warrant, for the court
// officer (release) and the judge or trust admin (warrant verify) alike.
var signerHints = map[warrant.Reason]string{
	warrant.ReasonCourtMismatch: "the warrant's court must be exactly the court its signers' root is pinned for " +
		"(custodian trust list shows each root's court), and a signer may chain to one court only: when its chains reach the roots " +
		"of several courts, one pinned root issued another; the trust admin sets the store up again without the lower root " +
		"(docs/court-trust-admin.md)",
	warrant.ReasonExtKeyUsage: "a signer's certificate, or a CA above it, is not for signing documents: " +
		"the court issues judges certificates with documentSigning (1.3.6.1.5.5.7.3.36) or emailProtection, " +
		"or the trust admin accepts the court's purpose (custodian trust set-policy --eku)",
	warrant.ReasonMissingPolicy: "every certificate between the judge and the root must carry the certificate policies " +
		"the approval policy requires (custodian trust list)",
	warrant.ReasonNameConstraints: "a CA of the signer's chain has a name constraint this appliance cannot check " +
		"(such as a directoryName); the court issues judges' certificates under a CA without one",
	warrant.ReasonDuplicateSigner: "signatures count as distinct signers only when their keys and their person names (the common name, " +
		"else given name and surname, ignoring case, spacing and compatibility forms) differ: a second person co-signs with their own certificate",
	warrant.ReasonNoSignerName: "a signer's certificate names no person (no common name, given name or surname), so it cannot count " +
		"toward the approval policy: the court issues judges certificates that carry their names",
	warrant.ReasonCRLMissing: "the trust admin sets the signer's CA's current CRL with the CA certificates up to the root appended " +
		"(custodian trust set-crl FILE); custodian trust list shows a stored CRL that no longer verifies",
}

// signerHint attaches the advice for err's refusal reason, if any.
func signerHint(err error) error {
	if h, ok := signerHints[warrant.ReasonOf(err)]; ok {
		return withHint(err, h)
	}
	return err
}

// foreignKeyHint is the advice for a data directory whose checkpoint key
// the TPM did not anchor; resolve-rollback cannot accept it.
const foreignKeyHint = "this data directory's checkpoint key is not the one this TPM anchored at ledger init: " +
	"restore the device's own data directory (a device set up before ledger init anchored its key must be set up afresh, on a new TPM)"

// keyHint says why the checkpoint key does not open (Appliance.SignerErr).
func keyHint(err error) error {
	switch {
	case errors.Is(err, ledger.ErrForeignLedgerKey):
		return withHint(err, foreignKeyHint)
	case errors.Is(err, tpm.ErrDowngrade):
		return floorHint(err)
	}
	return withHint(err, "the checkpoint key opens only on the approved image with its PCRs measured")
}

// initHint says what to do when ledger init fails.
func initHint(err error) error {
	switch {
	case errors.Is(err, appliance.ErrLedgerCreated), errors.Is(err, tpm.ErrAnchorTaken):
		return withHint(err, "ledger init runs once per TPM, and this TPM's ran: "+
			"restore the data directory (ledger.journal with ledger.db, or the journal alone; ledger-key.blob, ledger-key.pub) from its newest backup; "+
			"a new ledger would forget every warrant already used")
	case errors.Is(err, appliance.ErrUnfinishedInit):
		return withHint(err, "an interrupted ledger init is finished only over the ledger it left; "+
			"this TPM anchored no key, so nothing can have used this one: keep a copy of ledger.journal and ledger.db, remove them, and run custodian ledger init again")
	case errors.Is(err, ledger.ErrLedgerExists):
		return withHint(err, "this device already has its ledger: custodian ledger verify checks it")
	}
	return withHint(err, "the device must be enrolled and booted into the approved image (its PCRs measured)")
}

// blockedHint says how an operator resolves a blocked ledger.
func blockedHint(err error) error {
	switch {
	case errors.Is(err, ledger.ErrForeignLedgerKey):
		return withHint(err, foreignKeyHint)
	case errors.Is(err, appliance.ErrWrongEK):
		return withHint(err, "put back this device's own enrollment.json; resolve-rollback cannot accept another TPM's")
	case errors.Is(err, ledger.ErrOtherDevice):
		return withHint(err, "a ledger of another device cannot be adopted: set this device up afresh (custodian enroll, then custodian ledger init in an empty data directory)")
	case errors.Is(err, ledger.ErrStateUnauthenticated):
		return withHint(err, "boot the approved image: only it can check and bind the data directory")
	case errors.Is(err, ledger.ErrRecordsEdited):
		return withHint(err, "ledger.db or its journal was edited: if the data directory holds a kept ledger.db (ledger.db.N.kept), go back to it as docs/operator.md says (\"A kept ledger.db\"); otherwise restore them (with trust/ and bundles/) from the newest backup the device wrote; resolve-rollback cannot accept edited records")
	case errors.Is(err, ledger.ErrJournalDamaged):
		return withHint(err, "keep a copy of the data directory as evidence, then restore the newest backup of ledger.journal and ledger.db together, or start with ledger.db alone (docs/operator.md, \"A damaged journal\"); never the journal alone beside a newer ledger.db; resolve-rollback cannot repair a journal")
	case errors.Is(err, ledger.ErrIndexKept):
		return withHint(err, "the kept ledger.db holds entries the journal lacks: go back to it as docs/operator.md says (\"A kept ledger.db\"); resolve-rollback cannot accept this")
	case errors.Is(err, ledger.ErrStateMismatch), errors.Is(err, ledger.ErrChangeInterrupted):
		return withHint(err, "restore the data directory from its newest state if you can; otherwise check trust/ and bundles/ (custodian trust list), accept them with custodian ledger resolve-rollback (logged), then set the current CRL and roots again")
	case errors.Is(err, ledger.ErrBlocked):
		return withHint(err, "an operator resolves this with custodian ledger resolve-rollback, which is logged")
	}
	return err
}
