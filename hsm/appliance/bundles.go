package appliance

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/hsm/ledger"
)

// BundleDir holds the provisioned bundles, one file per key ID.
const BundleDir = "bundles"

// ErrBundleExists means another bundle is already stored for the key ID.
var ErrBundleExists = errors.New("a different bundle is already provisioned for this key ID")

// Provision checks a bundle (for this custodian, this TPM, opens under the
// current PCRs, matches the commitments), and stores it with a provision
// entry that binds the new bundles directory (ledger.Ledger.Change).
// Provisioning the same bundle twice is a no-op.
func (a *Appliance) Provision(t transport.TPM, data []byte, now time.Time) (*escrow.Bundle, error) {
	b, err := escrow.ParseBundle(data)
	if err != nil {
		return nil, err
	}
	// Another custodian's bundle is named as such before anything else:
	// "a bundle already exists" would send the operator the wrong way.
	if b.CustodianID != a.ID {
		return nil, fmt.Errorf("%w: this bundle is for %s, and this device is %s", escrow.ErrOtherCustodian, b.CustodianID, a.ID)
	}
	path := a.bundlePath(b.Escrow.KeyID)
	if old, err := os.ReadFile(path); err == nil {
		if bytes.Equal(old, data) {
			return b, nil
		}
		return nil, fmt.Errorf("%w (%s)", ErrBundleExists, b.Escrow.KeyID)
	}
	if err := escrow.Provision(t, b, a.ID, a.ImportKey); err != nil {
		return nil, err
	}
	entry := ledger.Entry{Time: now.UTC().Truncate(time.Second), Kind: ledger.KindProvision,
		Outcome: ledger.OutcomeOK, KeyID: b.Escrow.KeyID}
	_, err = a.Ledger.Change(BundleDir, entry, data, func() error {
		if err := durable.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		return durable.WriteFile(path, data, 0o600)
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Bundle returns the stored bundle for keyID.
func (a *Appliance) Bundle(keyID string) (*escrow.Bundle, error) {
	if err := ids.CheckKeyID(keyID); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(a.bundlePath(keyID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no share is provisioned for key ID %s", keyID)
	}
	if err != nil {
		return nil, err
	}
	b, err := escrow.ParseBundle(data)
	if err != nil {
		return nil, err
	}
	if b.Escrow.KeyID != keyID || b.CustodianID != a.ID {
		return nil, fmt.Errorf("the bundle stored for key ID %s is for key ID %s of %s", keyID, b.Escrow.KeyID, b.CustodianID)
	}
	return b, nil
}

// KeyIDs lists the key IDs this appliance holds a share of.
func (a *Appliance) KeyIDs() ([]string, error) { return listKeyIDs(a.Dir) }

func (a *Appliance) bundlePath(keyID string) string {
	return filepath.Join(a.Dir, BundleDir, keyID+".json")
}

// Held reads, without the TPM, the custodian ID of the enrollment in dir
// and the key IDs it holds bundles of: what a warrant is checked against
// on the device (custodian warrant verify). ErrNotEnrolled when dir is not
// a device's. Only for showing: a release checks both against the TPM and
// the ledger.
func Held(dir string) (id string, keyIDs []string, err error) {
	if id, _, _, err = readIdentity(dir); err != nil {
		return "", nil, err
	}
	keyIDs, err = listKeyIDs(dir)
	return id, keyIDs, err
}
