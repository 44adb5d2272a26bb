package appliance

import (
	"bytes"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
)

// ErrWrongEK blocks a data directory whose enrollment names an
// endorsement key or import key this TPM does not hold: enrollment.json
// was replaced, or the card is in another device. Nothing is sealed to
// that key, and resolve-rollback cannot accept it.
var ErrWrongEK = fmt.Errorf("%w: enrollment.json names an endorsement key or import key this TPM does not hold (replaced, or the card is in another device); put back this device's enrollment.json, or set the device up afresh", ledger.ErrBlocked)

// checkEK compares the enrolled EK and import key with the ones the TPM
// holds at their persistent handles. Sealing (the checkpoint key at init,
// reseal, a floor raise) is offline, to the enrolled import key, so a
// swapped enrollment would have the device wrap its own secrets to
// someone else's TPM. The check trusts the TPM's answer over the bus: an
// active attacker on the bus is outside the threat model.
func checkEK(t transport.TPM, enrolled *tpm.EK, importKey *tpm.ImportKey) error {
	held, err := tpm.ReadEK(t, enrolled.Kind())
	if err != nil {
		return fmt.Errorf("%w (reading this TPM's endorsement key: %v)", ErrWrongEK, err)
	}
	if !bytes.Equal(held.Name(), enrolled.Name()) {
		return ErrWrongEK
	}
	heldImport, err := tpm.ReadImportKey(t, importKey.Kind())
	if err != nil {
		return fmt.Errorf("%w (reading this TPM's import key: %v)", ErrWrongEK, err)
	}
	if !bytes.Equal(heldImport.Name(), importKey.Name()) {
		return ErrWrongEK
	}
	return nil
}

// sealingKey is the import key to seal to offline: the enrolled one, once
// Open found this TPM holds it.
func (a *Appliance) sealingKey() (*tpm.ImportKey, error) {
	if a.EKErr != nil {
		return nil, a.EKErr
	}
	return a.ImportKey, nil
}
