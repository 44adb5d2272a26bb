// Package appliance is a custodian's state on its device: the layout of
// its data directory, and what it takes to open it against the TPM.
//
// The data directory holds:
//
//	enrollment.json   the device's identity, from custodian enroll
//	ledger.journal    the ledger (package ledger): its journal, the durable truth
//	ledger.db         the ledger's index, rebuilt from the journal when needed
//	ledger-key.blob   the checkpoint signing key, sealed to the import key, PCRs and a security version
//	ledger-key.pub    its public verifier key (C2SP signed-note format)
//	trust/            the court trust store (package trust)
//	bundles/          the provisioned share bundles, one per key ID
//
// The ledger binds the trust store and the bundles to the TPM with the
// rest of its state (ledger.Config.Bound): they change only through
// Ledger.Change, and a copy of either restored alone blocks releases.
//
// The checkpoint key in ledger-key.blob is an import blob anyone can make
// from public values, so Init anchors it in the TPM for the TPM's life
// (tpm.Anchor: a platform NV index written once, never deleted), and Open
// accepts only that key: a data directory under any other opens blocked
// with ledger.ErrForeignLedgerKey. A TPM holds one ledger key and one
// ledger: Init on a TPM that anchored a key is refused, whichever key, so
// a lost ledger is restored from a backup, never made again; Reseal,
// FinishReseal and RaiseFloor seal the same seed again, so the key stays
// anchored.
//
// The endorsement key and the import key are taken from the enrollment,
// never read back from the TPM: every session salted to the import key
// then proves the TPM is the enrolled one. Sealing to the import key (never
// to the EK, whose policy lets TPM2_Rewrap open what is wrapped to it)
// needs no TPM, so Init and Open also check that the TPM holds both
// (ErrWrongEK).
package appliance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
)

// Files in the data directory.
const (
	EnrollmentFile = "enrollment.json"
	TrustDir       = "trust"
	LedgerKeyBlob  = "ledger-key.blob"
	LedgerKeyPub   = "ledger-key.pub"
)

// Appliance is an opened data directory.
type Appliance struct {
	Dir string
	ID  string
	EK  *tpm.EK
	// ImportKey is what the device's secrets are sealed to.
	ImportKey *tpm.ImportKey
	Ledger    *ledger.Ledger
	// VerifierKey is the public key auditors check checkpoints with.
	VerifierKey string
	// SignerErr says why checkpoints cannot be signed (the key did not
	// unseal: the PCRs are not the approved image's), or nil.
	SignerErr error
	// EKErr is ErrWrongEK when the TPM does not hold the enrolled EK or
	// import key: the
	// ledger is blocked and nothing is sealed to its import key.
	EKErr error
}

// Origin is the checkpoint origin of a custodian's ledger.
func Origin(custodianID string) string { return escrow.LedgerOrigin(custodianID) }

// Errors of ledger init.
var (
	// ErrLedgerCreated refuses ledger init on a TPM whose anchor is
	// locked: Init locks it last, so this TPM's ledger was made, and a new
	// one would forget its history and its replay index under the same
	// verifier key.
	ErrLedgerCreated = errors.New("this TPM's ledger was created before; a lost ledger (ledger.journal, ledger.db) cannot be replaced: restore it from a backup")
	// ErrUnfinishedInit refuses to finish an init whose ledger is not just
	// that init's own.
	ErrUnfinishedInit = errors.New("the ledger found is not the one an interrupted ledger init left (only its init entry, under this directory's key, at the TPM's counter)")
)

// Init creates the ledger of an enrolled device: a checkpoint key sealed to
// the device's import key and the current values of pcrs, the ledger itself, and
// then the key's anchor in the TPM for its life (tpm.Anchor).
//
// Init runs once per TPM: on a TPM whose anchor is locked it is refused,
// always (ErrLedgerCreated, or ledger.ErrLedgerExists over a ledger), even
// if the anchor names the key in dir, since a lost ledger can only be
// restored. An Init interrupted before the anchor was locked is run
// again: without a ledger it starts over with a new key (the files it
// left bind nothing); with one, it finishes only if the ledger holds just
// its init entry, under the key in dir, at the TPM's counter. Nothing can
// have been appended to it: a ledger whose key is not anchored opens
// blocked.
func Init(dir string, t transport.TPM, pcrs []int, now time.Time) (*Appliance, error) {
	id, ek, importKey, err := readIdentity(dir)
	if err != nil {
		return nil, err
	}
	if err := checkEK(t, ek, importKey); err != nil {
		return nil, err
	}
	if err := refuseAnchored(t, dir); err != nil {
		return nil, err
	}
	var key *ledger.SigningKey
	var l *ledger.Ledger
	if hasLedger(dir) {
		key, l, err = unfinishedLedger(t, dir, id, ek)
	} else {
		key, l, err = newLedger(t, dir, id, ek, importKey, pcrs, now)
	}
	if err != nil {
		return nil, err
	}
	if err := key.Anchor(t); err != nil {
		l.Close()
		return nil, err
	}
	return &Appliance{Dir: dir, ID: id, EK: ek, ImportKey: importKey, Ledger: l, VerifierKey: key.Verifier}, nil
}

// refuseAnchored refuses a TPM whose anchor is locked.
func refuseAnchored(t transport.TPM, dir string) error {
	_, err := tpm.ReadAnchor(t)
	switch {
	case err == nil && hasLedger(dir):
		return ledger.ErrLedgerExists
	case err == nil:
		return ErrLedgerCreated
	case errors.Is(err, tpm.ErrNoAnchor), errors.Is(err, tpm.ErrNotAnchor):
		return nil // nothing anchored: no ledger of this TPM's exists
	}
	return err
}

func hasLedger(dir string) bool {
	exists, err := ledger.Exists(dir)
	return exists || err != nil
}

// newLedger makes a checkpoint key, stores it and creates the ledger.
func newLedger(t transport.TPM, dir, id string, ek *tpm.EK, importKey *tpm.ImportKey, pcrs []int, now time.Time) (*ledger.SigningKey, *ledger.Ledger, error) {
	values, err := tpm.ReadPCRs(t, pcrs...)
	if err != nil {
		return nil, nil, err
	}
	// The key is sealed at the current floor (defined here if enrollment
	// did not, before the ledger's counter): it opens until the floor
	// rises past it. Resealing for an update moves it to the new image's
	// version, and RaiseFloor moves it to the running image's.
	floor, err := tpm.DefineFloor(t)
	if err != nil {
		return nil, nil, err
	}
	key, err := ledger.NewSigningKey(Origin(id), importKey, values, floor)
	if err != nil {
		return nil, nil, err
	}
	// No ledger exists and no key is anchored: files an interrupted Init
	// left bind nothing and are replaced.
	if err := durable.WriteFile(filepath.Join(dir, LedgerKeyBlob), key.Sealed.Marshal(), 0o600); err != nil {
		return nil, nil, err
	}
	if err := durable.WriteFile(filepath.Join(dir, LedgerKeyPub), []byte(key.Verifier+"\n"), 0o644); err != nil {
		return nil, nil, err
	}
	cfg, err := initConfig(t, dir, id, ek, key)
	if err != nil {
		return nil, nil, err
	}
	l, err := ledger.Create(dir, cfg, now)
	return key, l, err
}

// unfinishedLedger opens the ledger an Init interrupted before the anchor
// left, under the key in dir, and checks that it is only that Init's.
func unfinishedLedger(t transport.TPM, dir, id string, ek *tpm.EK) (*ledger.SigningKey, *ledger.Ledger, error) {
	unfinished := func(why error) error {
		return fmt.Errorf("%w: %w", ErrUnfinishedInit, why)
	}
	key, err := readSigningKey(dir)
	if err != nil {
		return nil, nil, unfinished(err)
	}
	cfg, err := initConfig(t, dir, id, ek, key)
	if err != nil {
		return nil, nil, unfinished(err)
	}
	l, err := ledger.Open(dir, cfg)
	if err != nil {
		return nil, nil, unfinished(err)
	}
	if err := onlyInit(l); err != nil {
		l.Close()
		return nil, nil, unfinished(err)
	}
	return key, l, nil
}

// onlyInit checks that l holds just its init entry and is not blocked
// (its state verifies under the key, its counter is the TPM's).
func onlyInit(l *ledger.Ledger) error {
	if err := l.Blocked(); err != nil {
		return err
	}
	if n := l.Size(); n != 1 {
		return fmt.Errorf("it holds %d entries", n)
	}
	data, err := l.Entry(0)
	if err != nil {
		return err
	}
	e, err := ledger.ParseEntry(data)
	if err != nil {
		return err
	}
	if e.Kind != ledger.KindInit {
		return fmt.Errorf("its entry is a %s entry", e.Kind)
	}
	return nil
}

// Open opens an initialized data directory. A ledger that is blocked, or a
// checkpoint key that does not unseal, still opens (for reading and for
// the operator to act on); Ledger.Blocked and SignerErr say so.
func Open(dir string, t transport.TPM) (*Appliance, error) {
	id, ek, importKey, err := readIdentity(dir)
	if err != nil {
		return nil, err
	}
	key, err := readSigningKey(dir)
	if err != nil {
		return nil, err
	}
	ekErr := checkEK(t, ek, importKey)
	cfg, signerErr := config(t, dir, id, ek, key)
	cfg.DeviceErr = ekErr
	l, err := ledger.Open(dir, cfg)
	if err != nil {
		return nil, err
	}
	return &Appliance{Dir: dir, ID: id, EK: ek, ImportKey: importKey, Ledger: l, VerifierKey: key.Verifier, SignerErr: signerErr, EKErr: ekErr}, nil
}

// Close closes the ledger.
func (a *Appliance) Close() error { return a.Ledger.Close() }

func config(t transport.TPM, dir, id string, ek *tpm.EK, key *ledger.SigningKey) (ledger.Config, error) {
	cfg := baseConfig(t, dir, id, ek)
	signer, stateKey, err := key.Open(t)
	if err != nil {
		cfg.KeyErr = err
		return cfg, err
	}
	cfg.Signer, cfg.StateKey = signer, stateKey
	return cfg, nil
}

// initConfig is config for Init, before the key is anchored.
func initConfig(t transport.TPM, dir, id string, ek *tpm.EK, key *ledger.SigningKey) (ledger.Config, error) {
	cfg := baseConfig(t, dir, id, ek)
	signer, stateKey, err := key.OpenUnanchored(t)
	if err != nil {
		return cfg, err
	}
	cfg.Signer, cfg.StateKey = signer, stateKey
	return cfg, nil
}

func baseConfig(t transport.TPM, dir, id string, ek *tpm.EK) ledger.Config {
	return ledger.Config{
		Origin:  Origin(id),
		Device:  ek.Name(),
		Counter: &ledger.TPMCounter{TPM: t, Counter: tpm.Counter{Index: tpm.DefaultCounterIndex}},
		Bound:   BoundDirs(dir),
	}
}

// BoundDirs are the directories of dir the ledger binds to the TPM.
func BoundDirs(dir string) []ledger.BoundDir {
	return []ledger.BoundDir{
		{Name: TrustDir, Path: filepath.Join(dir, TrustDir)},
		{Name: BundleDir, Path: filepath.Join(dir, BundleDir)},
	}
}

// ChangeTrust applies a change to the trust store and logs it as one
// trust entry committing to subject; see ledger.Ledger.Change.
func (a *Appliance) ChangeTrust(subject []byte, now time.Time, apply func() error) error {
	e := ledger.Entry{Time: now.UTC().Truncate(time.Second), Kind: ledger.KindTrust, Outcome: ledger.OutcomeOK}
	_, err := a.Ledger.Change(TrustDir, e, subject, apply)
	return err
}

// reopen opens the ledger again, after the checkpoint key was replaced.
func (a *Appliance) reopen(t transport.TPM) error {
	key, err := readSigningKey(a.Dir)
	if err != nil {
		return err
	}
	cfg, signerErr := config(t, a.Dir, a.ID, a.EK, key)
	cfg.DeviceErr = a.EKErr
	if err := a.Ledger.Close(); err != nil {
		return err
	}
	l, err := ledger.Open(a.Dir, cfg)
	if err != nil {
		return err
	}
	a.Ledger, a.SignerErr = l, signerErr
	return nil
}

// ErrNotEnrolled means the data directory has no enrollment.
var ErrNotEnrolled = errors.New("this device is not enrolled")

// readIdentity reads the custodian ID, EK and import key of the
// enrollment in dir.
func readIdentity(dir string) (string, *tpm.EK, *tpm.ImportKey, error) {
	data, err := os.ReadFile(filepath.Join(dir, EnrollmentFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, nil, fmt.Errorf("%w (no %s in %s)", ErrNotEnrolled, EnrollmentFile, dir)
	}
	if err != nil {
		return "", nil, nil, err
	}
	e, err := enrollment.Parse(data)
	if err != nil {
		return "", nil, nil, err
	}
	if err := enrollment.CheckID(e.CustodianID); err != nil {
		return "", nil, nil, err
	}
	ek, err := tpm.ParseEK(e.EK.PublicKey)
	if err != nil {
		return "", nil, nil, err
	}
	importKey, err := tpm.ParseImportKey(e.ImportKey.PublicKey)
	if err != nil {
		return "", nil, nil, err
	}
	return e.CustodianID, ek, importKey, nil
}

func readSigningKey(dir string) (*ledger.SigningKey, error) {
	blobData, err := os.ReadFile(filepath.Join(dir, LedgerKeyBlob))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ledger.ErrNoLedger, err)
	}
	blob, err := tpm.ParseBlob(blobData)
	if err != nil {
		return nil, err
	}
	pub, err := os.ReadFile(filepath.Join(dir, LedgerKeyPub))
	if err != nil {
		return nil, err
	}
	return &ledger.SigningKey{Sealed: blob, Verifier: strings.TrimSpace(string(pub))}, nil
}
