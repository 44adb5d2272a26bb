package appliance

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ids"
	"github.com/custodian-project/custodian/tpm"
)

// An image update must never leave the device in an image its sealed files
// do not open without a way back. ReadyFor is the check before the new
// image is written; Pending the check before it is made the default.

// ErrNotResealed refuses an image the data directory is not sealed to,
// neither by the ceremony nor by a reseal the escrow authority approved.
var ErrNotResealed = errors.New("this device's shares are not resealed to the new image")

// ReadyFor reports whether everything sealed in dir will open under an
// image with pcrs and version: each key ID's bundle and the checkpoint
// key either already sealed to them, or resealed to them by reseal
// --update (the ".next" files), whose bundles carry the escrow
// authority's signed approval, checked here again. It needs no TPM; the
// TPM decides again when the new image runs reseal --finish. It returns
// how many sealed files it checked: 0 means nothing is sealed yet (no
// ledger, no share), and any image is as good as another.
func ReadyFor(dir string, pcrs tpm.PCRValues, version uint64) (int, error) {
	keyIDs, err := listKeyIDs(dir)
	if err != nil {
		return 0, err
	}
	checked := 0
	for _, keyID := range keyIDs {
		if err := bundleReadyFor(dir, keyID, pcrs, version); err != nil {
			return checked, fmt.Errorf("%w: key ID %s: %v", ErrNotResealed, keyID, err)
		}
		checked++
	}
	ok, err := ledgerKeyReadyFor(dir, pcrs, version)
	if err != nil {
		return checked, fmt.Errorf("%w: the checkpoint key: %v", ErrNotResealed, err)
	}
	if ok {
		checked++
	}
	return checked, nil
}

// bundleReadyFor accepts the bundle of keyID if the current or the
// resealed one names pcrs and version; a resealed one must carry an
// update its escrow file's update key signed for exactly those.
func bundleReadyFor(dir, keyID string, pcrs tpm.PCRValues, version uint64) error {
	path := filepath.Join(dir, BundleDir, keyID+".json")
	current, err := readBundle(path)
	if err != nil {
		return err
	}
	if sealedTo(current.Escrow, pcrs, version) {
		return nil
	}
	next, err := readBundle(path + nextSuffix)
	if errors.Is(err, os.ErrNotExist) {
		return errors.New("it is sealed to another image and was not resealed")
	}
	if err != nil {
		return err
	}
	if !sealedTo(next.Escrow, pcrs, version) {
		return errors.New("it was resealed to another image than this one")
	}
	approved, _, err := next.Escrow.OpenUpdate(next.Update)
	if err != nil {
		return err
	}
	if !approved.PCRs.Equal(pcrs) || approved.SecurityVersion != version {
		return errors.New("its update approves another image than this one")
	}
	return nil
}

func sealedTo(p escrow.Public, pcrs tpm.PCRValues, version uint64) bool {
	return p.PCRs.Equal(pcrs) && p.SecurityVersion == version
}

func readBundle(path string) (*escrow.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return escrow.ParseBundle(data)
}

// ledgerKeyReadyFor reports whether there is a checkpoint key, and
// refuses one that neither it nor its resealed file is sealed to pcrs and
// version.
func ledgerKeyReadyFor(dir string, pcrs tpm.PCRValues, version uint64) (bool, error) {
	path := filepath.Join(dir, LedgerKeyBlob)
	for i, name := range []string{path, path + nextSuffix} {
		data, err := os.ReadFile(name)
		if errors.Is(err, os.ErrNotExist) {
			if i == 0 {
				return false, nil // no ledger yet
			}
			return true, errors.New("it is sealed to another image and was not resealed")
		}
		if err != nil {
			return true, err
		}
		blob, err := tpm.ParseBlob(data)
		if err != nil {
			return true, err
		}
		if blob.PCRs.Equal(pcrs) && blob.Version == version {
			return true, nil
		}
	}
	return true, errors.New("it was resealed to another image than this one")
}

// Pending lists the resealed files reseal --finish has not promoted yet
// (file names relative to dir). An image is made the default only when
// none is left: until then the previous image is the one they open under.
func Pending(dir string) ([]string, error) {
	var pending []string
	if _, err := os.Stat(filepath.Join(dir, LedgerKeyBlob+nextSuffix)); err == nil {
		pending = append(pending, LedgerKeyBlob+nextSuffix)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, BundleDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), nextSuffix) {
			pending = append(pending, filepath.Join(BundleDir, e.Name()))
		}
	}
	return pending, nil
}

// listKeyIDs is KeyIDs for a data directory not opened against a TPM.
func listKeyIDs(dir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(dir, BundleDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok && ids.CheckKeyID(name) == nil {
			out = append(out, name)
		}
	}
	return out, nil
}
