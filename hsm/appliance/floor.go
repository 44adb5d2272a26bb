package appliance

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
)

// The floor is the TPM's security version floor (tpm.FloorIndex): every
// share, scoped key and the checkpoint key open only while it is at most
// their image's security version. It rises only when the operator raises
// it, on a newer image that opens everything it holds — never on its own
// at start-up, so that until the operator has seen the new image work,
// the previous image still boots and opens (an update can be rolled back).
// Once raised, the older images open nothing, and nothing lowers it.

// Floor refusals the operator acts on.
var (
	ErrFloorAboveImage = errors.New("the floor cannot rise above the security version of the running image")
	ErrFloorLower      = errors.New("the floor only rises")
	ErrFloorNotOpen    = errors.New("not everything this device holds opens on the running image")
)

// FloorStatus is the device's floor beside the security versions of what
// it holds.
type FloorStatus struct {
	Floor     uint64            `json:"floor"`
	LedgerKey uint64            `json:"ledger_key"` // the checkpoint key's version
	Bundles   map[string]uint64 `json:"bundles"`    // key ID → its image's version
}

// FloorStatus reads the floor and the versions sealed into the checkpoint
// key and each bundle (from the files; nothing is opened).
func (a *Appliance) FloorStatus(t transport.TPM) (*FloorStatus, error) {
	floor, err := tpm.ReadFloor(t)
	if err != nil {
		return nil, err
	}
	key, err := readSigningKey(a.Dir)
	if err != nil {
		return nil, err
	}
	s := &FloorStatus{Floor: floor, LedgerKey: key.Sealed.Version, Bundles: map[string]uint64{}}
	keyIDs, err := a.KeyIDs()
	if err != nil {
		return nil, err
	}
	for _, keyID := range keyIDs {
		b, err := a.Bundle(keyID)
		if err != nil {
			return nil, err
		}
		s.Bundles[keyID] = b.Escrow.SecurityVersion
	}
	return s, nil
}

// RaiseFloor raises the TPM's floor to the security version `to`, or, for
// 0, to the running image's: the version the authority sealed or approved
// the provisioned shares for, all of which must open here now (shares
// unseal and match their commitments, scoped keys compute a proven
// partial), as must the checkpoint key. The checkpoint key, if it is
// sealed for a lower version of this same image (ledger init seals it at
// the floor of the day), is sealed again for the new floor first, so it
// keeps opening. A floor entry is appended to the ledger, then the
// counter is incremented. It refuses, and logs the refusal, a target
// above the running image's version or below the current floor. It
// returns the floor before and after.
func (a *Appliance) RaiseFloor(t transport.TPM, to uint64, now time.Time) (from, raised uint64, err error) {
	from, err = tpm.ReadFloor(t)
	if err != nil {
		return 0, 0, err
	}
	image, pcrs, err := a.runningImage(t)
	if err != nil {
		return from, from, a.logFloor(now, from, to, "floor-not-open", err)
	}
	if to == 0 {
		to = image
	}
	switch {
	case to > image:
		return from, from, a.logFloor(now, from, to, "floor-above-image",
			fmt.Errorf("%w (floor %d asked, the running image is version %d)", ErrFloorAboveImage, to, image))
	case to < from:
		return from, from, a.logFloor(now, from, to, "floor-lower",
			fmt.Errorf("%w: it is %d; %d is below it", ErrFloorLower, from, to))
	case to == from:
		return from, from, nil
	}
	if err := a.sealLedgerKeyFor(t, pcrs, to); err != nil {
		return from, from, a.logFloor(now, from, to, "floor-not-open", err)
	}
	if err := a.logFloor(now, from, to, "", nil); err != nil {
		return from, from, err
	}
	raised, err = tpm.RaiseFloor(t, to)
	return from, raised, err
}

// runningImage opens every bundle and returns the lowest security version
// they are sealed or approved for, and their PCRs: the running image's.
func (a *Appliance) runningImage(t transport.TPM) (uint64, tpm.PCRValues, error) {
	keyIDs, err := a.KeyIDs()
	if err != nil {
		return 0, nil, err
	}
	if len(keyIDs) == 0 {
		return 0, nil, fmt.Errorf("%w: no share is provisioned, so no authority vouches for the running image's version", ErrFloorNotOpen)
	}
	var image uint64
	var pcrs tpm.PCRValues
	for _, keyID := range keyIDs {
		b, err := a.Bundle(keyID)
		if err != nil {
			return 0, nil, err
		}
		if err := escrow.Provision(t, b, a.ID, a.ImportKey); err != nil {
			return 0, nil, fmt.Errorf("%w: key ID %s: %w", ErrFloorNotOpen, keyID, err)
		}
		if image == 0 || b.Escrow.SecurityVersion < image {
			image = b.Escrow.SecurityVersion
		}
		pcrs = b.Escrow.PCRs
	}
	return image, pcrs, nil
}

// sealLedgerKeyFor makes sure the checkpoint key opens under floor v: it
// must open now, and if it is sealed for a lower version, it must be
// sealed to the running image's PCRs, and is sealed again for v.
func (a *Appliance) sealLedgerKeyFor(t transport.TPM, pcrs tpm.PCRValues, v uint64) error {
	key, err := readSigningKey(a.Dir)
	if err != nil {
		return err
	}
	seed, err := tpm.Unseal(t, key.Sealed)
	if err != nil {
		return fmt.Errorf("%w: the checkpoint key: %w", ErrFloorNotOpen, err)
	}
	defer clear(seed)
	if key.Sealed.Version >= v {
		return nil
	}
	if !key.Sealed.PCRs.Equal(pcrs) {
		return fmt.Errorf("%w: the checkpoint key is sealed for version %d of other PCRs than the shares'; reseal with the update first", ErrFloorNotOpen, key.Sealed.Version)
	}
	importKey, err := a.sealingKey()
	if err != nil {
		return err
	}
	next, err := tpm.Seal(importKey, pcrs, v, seed)
	if err != nil {
		return err
	}
	// The seed, and so the verifier key, stay the same: only the policy
	// changes. WriteFile replaces the file atomically.
	return durable.WriteFile(filepath.Join(a.Dir, LedgerKeyBlob), next.Marshal(), 0o600)
}

// logFloor appends a floor entry: the raise, or a refusal with its reason.
// It returns cause (or the ledger's error for a raise).
func (a *Appliance) logFloor(now time.Time, from, to uint64, reason string, cause error) error {
	e := ledger.Entry{Time: now.UTC().Truncate(time.Second), Kind: ledger.KindFloor, Outcome: ledger.OutcomeOK}
	if cause != nil {
		e.Outcome, e.Reason = ledger.OutcomeRefused, reason
	}
	subject := fmt.Appendf(nil, "custodian floor %d to %d", from, to)
	if _, err := a.Ledger.Append(e, subject, nil); err != nil {
		if cause != nil {
			return fmt.Errorf("%w (and the refusal was not logged: %v)", cause, err)
		}
		return err
	}
	return cause
}
