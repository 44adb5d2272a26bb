package ledger

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tpm"
)

// The ledger key's anchor. The state key comes from the checkpoint key's
// seed, sealed in an import blob to the import key and the approved PCRs; such a
// blob can be made offline from public values, so a sealed key proves
// nothing about who made it. At ledger init the TPM anchors the key it
// accepts, for its whole life, in a platform NV index written once
// (tpm.Anchor): a digest of the key's verifier, which names the origin
// and the public key. Opening the key checks the anchor (two TPM
// commands, none per append), so a data directory forged under a key of
// someone else's is blocked.

// ErrForeignLedgerKey blocks a data directory whose checkpoint key is not
// the one this TPM anchored, or a TPM with no anchor.
var ErrForeignLedgerKey = fmt.Errorf("%w: this data directory's checkpoint key is not the one this TPM anchored at ledger init", ErrBlocked)

// anchorLabel separates the anchor digest from other hashes of the
// verifier key.
const anchorLabel = "custodian ledger key anchor v1\n"

// AnchorDigest is what the TPM anchors for a checkpoint verifier key
// ("name+hash+base64", the C2SP note verifier: origin and public key).
func AnchorDigest(verifier string) []byte {
	d := sha256.Sum256([]byte(anchorLabel + verifier))
	return d[:]
}

// Anchor makes this TPM accept k, and no other key, for its life; see
// tpm.Anchor (it resumes an interrupted anchoring and refuses another key
// once one is anchored). Call it after k.Sealed and k.Verifier are stored.
func (k *SigningKey) Anchor(t transport.TPM) error {
	err := tpm.Anchor(t, AnchorDigest(k.Verifier))
	if errors.Is(err, tpm.ErrAnchorTaken) {
		return fmt.Errorf("%w; this data directory cannot be initialised on it: restore the device's own data directory", err)
	}
	return err
}

// checkAnchor compares the TPM's anchor with the verifier's digest.
func checkAnchor(t transport.TPM, verifier string) error {
	err := tpm.CheckAnchor(t, AnchorDigest(verifier))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tpm.ErrAnchorTaken):
		return ErrForeignLedgerKey
	case errors.Is(err, tpm.ErrNoAnchor):
		return fmt.Errorf("%w (%v: the device was set up before ledger init anchored its key, or on another TPM; set it up afresh)", ErrForeignLedgerKey, err)
	case errors.Is(err, tpm.ErrNotAnchor):
		return fmt.Errorf("%w (%v)", ErrForeignLedgerKey, err)
	}
	return fmt.Errorf("%w: checking the ledger key anchor: %v", ErrBlocked, err)
}
