// Package appliance is a custodian's state on its device: the layout of
// its data directory, and what it takes to open it against the TPM.
//
// The data directory holds:
//
//	enrollment.json   the device's identity, from custodian enroll
//	ledger.db         the ledger (package ledger)
//	ledger-key.blob   the checkpoint signing key, sealed to the EK, PCRs and a security version
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
// with ledger.ErrForeignLedgerKey. A TPM holds one ledger key: Init on a
// TPM that anchored another is refused; Reseal, FinishReseal and
// RaiseFloor seal the same seed again, so the key stays anchored.
//
// The endorsement key is taken from the enrollment, never read back from
// the TPM: every session salted to it then proves the TPM is the enrolled
// one. Sealing to it needs no TPM, so Init and Open also check that the
// TPM holds it (ErrWrongEK).
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
	Dir    string
	ID     string
	EK     *tpm.EK
	Ledger *ledger.Ledger
	// VerifierKey is the public key auditors check checkpoints with.
	VerifierKey string
	// SignerErr says why checkpoints cannot be signed (the key did not
	// unseal: the PCRs are not the approved image's), or nil.
	SignerErr error
	// EKErr is ErrWrongEK when the TPM does not hold the enrolled EK: the
	// ledger is blocked and nothing is sealed to that EK.
	EKErr error
}

// Origin is the checkpoint origin of a custodian's ledger.
func Origin(custodianID string) string { return "custodian/" + custodianID }

// Init creates the ledger of an enrolled device: a checkpoint key sealed to
// the device's EK and the current values of pcrs, anchored in the TPM for
// its life (tpm.Anchor), and the ledger itself.
//
// A TPM anchors one key: Init on a TPM that anchored another is refused
// (tpm.ErrAnchorTaken). An Init interrupted at any point can be run again:
// before the anchor is locked it starts over with a new key (an unlocked
// anchor binds nothing); after, it goes on with the key in the directory,
// which is the anchored one (the key files are written before the anchor).
func Init(dir string, t transport.TPM, pcrs []int, now time.Time) (*Appliance, error) {
	id, ek, err := readIdentity(dir)
	if err != nil {
		return nil, err
	}
	if err := checkEK(t, ek); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, ledger.FileName)); err == nil {
		return nil, ledger.ErrLedgerExists
	}
	key, err := anchoredKey(t, dir, id, ek, pcrs)
	if err != nil {
		return nil, err
	}
	cfg, err := config(t, dir, id, ek, key)
	if err != nil {
		return nil, err
	}
	l, err := ledger.Create(dir, cfg, now)
	if err != nil {
		return nil, err
	}
	return &Appliance{Dir: dir, ID: id, EK: ek, Ledger: l, VerifierKey: key.Verifier}, nil
}

// anchoredKey returns the checkpoint key the TPM anchors: the one in dir
// if the anchor is locked and names it, else a new one, stored, then
// anchored.
func anchoredKey(t transport.TPM, dir, id string, ek *tpm.EK, pcrs []int) (*ledger.SigningKey, error) {
	_, err := tpm.ReadAnchor(t)
	if err == nil {
		return resumedKey(t, dir)
	}
	if !errors.Is(err, tpm.ErrNoAnchor) && !errors.Is(err, tpm.ErrNotAnchor) {
		return nil, err
	}
	values, err := tpm.ReadPCRs(t, pcrs...)
	if err != nil {
		return nil, err
	}
	// The key is sealed at the current floor (defined here if enrollment
	// did not, before the ledger's counter): it opens until the floor
	// rises past it. Resealing for an update moves it to the new image's
	// version, and RaiseFloor moves it to the running image's.
	floor, err := tpm.DefineFloor(t)
	if err != nil {
		return nil, err
	}
	key, err := ledger.NewSigningKey(Origin(id), ek, values, floor)
	if err != nil {
		return nil, err
	}
	// No ledger exists and no key is anchored: files an interrupted Init
	// left bind nothing and are replaced.
	if err := durable.WriteFile(filepath.Join(dir, LedgerKeyBlob), key.Sealed.Marshal(), 0o600); err != nil {
		return nil, err
	}
	if err := durable.WriteFile(filepath.Join(dir, LedgerKeyPub), []byte(key.Verifier+"\n"), 0o644); err != nil {
		return nil, err
	}
	return key, key.Anchor(t)
}

// resumedKey is the key in dir, which must be the one the TPM anchored.
func resumedKey(t transport.TPM, dir string) (*ledger.SigningKey, error) {
	key, err := readSigningKey(dir)
	if err == nil {
		_, _, err = key.Open(t)
	}
	if errors.Is(err, ledger.ErrNoLedger) || errors.Is(err, os.ErrNotExist) || errors.Is(err, ledger.ErrForeignLedgerKey) {
		return nil, fmt.Errorf("%w; restore the device's own data directory (ledger-key.blob, ledger-key.pub, ledger.db)", tpm.ErrAnchorTaken)
	}
	return key, err
}

// Open opens an initialized data directory. A ledger that is blocked, or a
// checkpoint key that does not unseal, still opens (for reading and for
// the operator to act on); Ledger.Blocked and SignerErr say so.
func Open(dir string, t transport.TPM) (*Appliance, error) {
	id, ek, err := readIdentity(dir)
	if err != nil {
		return nil, err
	}
	key, err := readSigningKey(dir)
	if err != nil {
		return nil, err
	}
	ekErr := checkEK(t, ek)
	cfg, signerErr := config(t, dir, id, ek, key)
	cfg.DeviceErr = ekErr
	l, err := ledger.Open(dir, cfg)
	if err != nil {
		return nil, err
	}
	return &Appliance{Dir: dir, ID: id, EK: ek, Ledger: l, VerifierKey: key.Verifier, SignerErr: signerErr, EKErr: ekErr}, nil
}

// Close closes the ledger.
func (a *Appliance) Close() error { return a.Ledger.Close() }

func config(t transport.TPM, dir, id string, ek *tpm.EK, key *ledger.SigningKey) (ledger.Config, error) {
	cfg := ledger.Config{
		Origin:  Origin(id),
		Device:  ek.Name(),
		Counter: ledger.TPMCounter{TPM: t, Counter: tpm.Counter{Index: tpm.DefaultCounterIndex}},
		Bound:   BoundDirs(dir),
	}
	signer, stateKey, err := key.Open(t)
	if err != nil {
		cfg.KeyErr = err
		return cfg, err
	}
	cfg.Signer, cfg.StateKey = signer, stateKey
	return cfg, nil
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

func readIdentity(dir string) (string, *tpm.EK, error) {
	data, err := os.ReadFile(filepath.Join(dir, EnrollmentFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil, fmt.Errorf("%w (no %s in %s)", ErrNotEnrolled, EnrollmentFile, dir)
	}
	if err != nil {
		return "", nil, err
	}
	e, err := enrollment.Parse(data)
	if err != nil {
		return "", nil, err
	}
	if err := enrollment.CheckID(e.CustodianID); err != nil {
		return "", nil, err
	}
	ek, err := tpm.ParseEK(e.EK.PublicKey)
	if err != nil {
		return "", nil, err
	}
	return e.CustodianID, ek, nil
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
