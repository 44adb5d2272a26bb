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
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/tpm"
)

// Resealing for an approved update happens in two steps, so that a device
// is never left without a share it can open:
//
//  1. On the old image, Reseal opens each share and the checkpoint key and
//     seals them to the new image's PCRs as "next" files beside the
//     current ones. Nothing current is touched.
//  2. After rebooting into the new image, FinishReseal opens each "next"
//     file; only one that opens here (so the new image really has those
//     PCRs) replaces the current one.
const nextSuffix = ".next"

// Reseal applies a signed update to every provisioned share and to the
// checkpoint key. A refused update is logged as such.
func (a *Appliance) Reseal(t transport.TPM, update []byte, now time.Time) ([]string, error) {
	keyIDs, err := a.KeyIDs()
	if err != nil {
		return nil, err
	}
	if len(keyIDs) == 0 {
		return nil, errors.New("no share is provisioned; nothing to reseal")
	}
	var image *escrow.Public
	for _, keyID := range keyIDs {
		next, err := a.resealBundle(t, keyID, update, now)
		if err != nil {
			a.logReseal(now, keyID, update, err)
			return nil, fmt.Errorf("key ID %s: %w", keyID, err)
		}
		image = &next.Escrow
	}
	if err := a.resealLedgerKey(t, image.PCRs, image.SecurityVersion); err != nil {
		return nil, err
	}
	return keyIDs, nil
}

// resealBundle writes keyID's "next" bundle and logs it, in one bound
// change of the bundles directory.
func (a *Appliance) resealBundle(t transport.TPM, keyID string, update []byte, now time.Time) (*escrow.Bundle, error) {
	b, err := a.Bundle(keyID)
	if err != nil {
		return nil, err
	}
	next, err := escrow.Reseal(t, b, update)
	if err != nil {
		return nil, err
	}
	data, err := next.Marshal()
	if err != nil {
		return nil, err
	}
	e := ledger.Entry{Time: now.UTC().Truncate(time.Second), Kind: ledger.KindReseal, Outcome: ledger.OutcomeOK, KeyID: keyID}
	_, err = a.Ledger.Change(BundleDir, e, update, func() error {
		return durable.WriteFile(a.bundlePath(keyID)+nextSuffix, data, 0o600)
	})
	return next, err
}

// resealLedgerKey seals the checkpoint key's seed to the new PCRs and
// security version, as the "next" file.
func (a *Appliance) resealLedgerKey(t transport.TPM, pcrs tpm.PCRValues, version uint64) error {
	importKey, err := a.sealingKey()
	if err != nil {
		return err
	}
	key, err := readSigningKey(a.Dir)
	if err != nil {
		return err
	}
	seed, err := tpm.Unseal(t, key.Sealed)
	if err != nil {
		return fmt.Errorf("opening the checkpoint key: %w", err)
	}
	defer clear(seed)
	next, err := tpm.Seal(importKey, pcrs, version, seed)
	if err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(a.Dir, LedgerKeyBlob+nextSuffix), next.Marshal(), 0o600)
}

// logReseal records a refused update in the ledger.
func (a *Appliance) logReseal(now time.Time, keyID string, update []byte, cause error) error {
	e := ledger.Entry{Time: now.UTC().Truncate(time.Second), Kind: ledger.KindReseal, Outcome: ledger.OutcomeRefused,
		Reason: "update-refused", KeyID: keyID}
	if !errors.Is(cause, escrow.ErrBadUpdate) {
		e.Reason = "reseal-failed"
	}
	_, err := a.Ledger.Append(e, update, nil)
	return err
}

// FinishReseal promotes every "next" file that opens under the current
// PCRs, and returns what it promoted. Files that do not open stay as they
// are (the device may have booted the old image again).
func (a *Appliance) FinishReseal(t transport.TPM, now time.Time) ([]string, error) {
	var promoted []string
	if ok, err := a.promoteLedgerKey(t); err != nil {
		return nil, err
	} else if ok {
		promoted = append(promoted, LedgerKeyBlob)
		// The ledger was opened without a key that unseals here; with the
		// promoted one it can check the state and log the promotions.
		if err := a.reopen(t); err != nil {
			return promoted, err
		}
	}
	entries, err := os.ReadDir(filepath.Join(a.Dir, BundleDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		keyID, ok := strings.CutSuffix(e.Name(), ".json"+nextSuffix)
		if !ok {
			continue
		}
		if err := a.promoteBundle(t, keyID, now); err != nil {
			return promoted, fmt.Errorf("key ID %s: %w", keyID, err)
		}
		promoted = append(promoted, keyID)
	}
	return promoted, nil
}

func (a *Appliance) promoteBundle(t transport.TPM, keyID string, now time.Time) error {
	path := a.bundlePath(keyID)
	data, err := os.ReadFile(path + nextSuffix)
	if err != nil {
		return err
	}
	b, err := escrow.ParseBundle(data)
	if err != nil {
		return err
	}
	if err := escrow.Provision(t, b, a.ID, a.ImportKey); err != nil {
		return err
	}
	e := ledger.Entry{Time: now.UTC().Truncate(time.Second), Kind: ledger.KindReseal, Outcome: ledger.OutcomeOK,
		Reason: "promoted", KeyID: keyID}
	_, err = a.Ledger.Change(BundleDir, e, data, func() error { return promote(path) })
	return err
}

func (a *Appliance) promoteLedgerKey(t transport.TPM) (bool, error) {
	path := filepath.Join(a.Dir, LedgerKeyBlob)
	data, err := os.ReadFile(path + nextSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	blob, err := tpm.ParseBlob(data)
	if err != nil {
		return false, err
	}
	seed, err := tpm.Unseal(t, blob)
	if err != nil {
		return false, fmt.Errorf("the resealed checkpoint key does not open on this image: %w", err)
	}
	clear(seed)
	return true, promote(path)
}

// promote replaces path with path.next, durably.
func promote(path string) error {
	if err := os.Rename(path+nextSuffix, path); err != nil {
		return err
	}
	return durable.SyncDir(filepath.Dir(path))
}
