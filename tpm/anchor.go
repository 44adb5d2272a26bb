package tpm

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// AnchorIndex is the NV index that names, for the TPM's whole life, the
// one ledger key the device accepts, beside the release counter and the
// floor.
const AnchorIndex tpm2.TPMHandle = 0x01800C59

// AnchorSize is the size of an anchor: a SHA-256 digest.
const AnchorSize = sha256.Size

// The anchor is an ordinary NV index the platform hierarchy defines, once,
// at ledger init, writes with a digest of the ledger key's verifier, and
// write-locks for good:
//
//   - PLATFORMCREATE: TPM2_Clear (the owner hierarchy's reset) keeps it,
//     and the owner can neither delete it nor define another at its handle.
//   - WRITEDEFINE: after TPM2_NV_WriteLock it is never written again while
//     it exists (TPM Reset does not clear the lock).
//   - POLICY_DELETE with an authPolicy no policy session can reach (the
//     SHA-256 of a fixed label, not the end of any policy hash chain):
//     TPM2_NV_UndefineSpace refuses it, and TPM2_NV_UndefineSpaceSpecial
//     needs that policy. So nothing deletes it.
//   - PPWRITE only: only the platform hierarchy writes and locks it. Its
//     authorization is empty on the appliance (no firmware takes it) and
//     returns to empty at every TPM Reset.
//   - AUTHREAD with an empty authValue, PPREAD: anyone reads it. NO_DA.
//
// Readers trust its contents only if its Name (which covers the
// attributes, the authPolicy and the size) is the one computed here with
// WRITTEN and WRITELOCKED set: an index someone else defined at the
// handle with other attributes is not the anchor.
var anchorTemplate = tpm2.TPMSNVPublic{
	NVIndex: AnchorIndex,
	NameAlg: tpm2.TPMAlgSHA256,
	Attributes: tpm2.TPMANV{
		PPWrite:        true,
		PPRead:         true,
		AuthRead:       true,
		WriteDefine:    true,
		PolicyDelete:   true,
		NoDA:           true,
		PlatformCreate: true,
		NT:             tpm2.TPMNTOrdinary,
	},
	AuthPolicy: tpm2.TPM2BDigest{Buffer: unreachablePolicy()},
	DataSize:   AnchorSize,
}

// unreachablePolicy is the anchor's authPolicy, required for deletion: a
// digest no sequence of policy commands produces.
func unreachablePolicy() []byte {
	d := sha256.Sum256([]byte("custodian ledger key anchor: never deleted"))
	return d[:]
}

// Errors of the anchor a caller acts on.
var (
	ErrNoAnchor    = errors.New("the TPM has no ledger key anchor")
	ErrNotAnchor   = fmt.Errorf("NV index %#x is not a custodian ledger key anchor (other attributes, or never locked)", uint32(AnchorIndex))
	ErrAnchorTaken = errors.New("this TPM already anchored another ledger key: a TPM holds one ledger key for its life")
	// ErrPlatformNVDisabled: while the platform hierarchy's NV is disabled
	// (TPM2_HierarchyControl, until the next TPM Reset), the anchor reads as
	// absent. Telling the two apart keeps ledger init from taking a present
	// anchor for a missing one.
	ErrPlatformNVDisabled = errors.New("the TPM's platform NV is disabled until the next reset, so the ledger key anchor cannot be read: restart the device")
)

// anchorState is where an anchor stands: defined, written, locked.
type anchorState int

const (
	anchorAbsent anchorState = iota
	anchorDefined
	anchorWritten
	anchorLocked
	anchorForeign // another index sits at the handle
)

// anchorName is the anchor's Name in a given state.
func anchorName(s anchorState) (tpm2.TPM2BName, error) {
	public := anchorTemplate
	public.Attributes.Written = s >= anchorWritten
	public.Attributes.WriteLocked = s >= anchorLocked
	name, err := tpm2.NVName(&public)
	if err != nil {
		return tpm2.TPM2BName{}, err
	}
	return *name, nil
}

// readAnchorState reads the index's public area (one command) and tells
// which state of the template its Name is.
func readAnchorState(t transport.TPM) (anchorState, tpm2.TPM2BName, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: AnchorIndex}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return anchorAbsent, tpm2.TPM2BName{}, checkPlatformNV(t)
	}
	if err != nil {
		return 0, tpm2.TPM2BName{}, fmt.Errorf("reading the ledger key anchor's public area: %w", err)
	}
	for _, s := range []anchorState{anchorDefined, anchorWritten, anchorLocked} {
		name, err := anchorName(s)
		if err != nil {
			return 0, tpm2.TPM2BName{}, err
		}
		if equalBytes(rsp.NVName.Buffer, name.Buffer) {
			return s, name, nil
		}
	}
	return anchorForeign, rsp.NVName, nil
}

// ReadAnchor returns the anchored digest: two commands (NV_ReadPublic,
// NV_Read). It fails with ErrNoAnchor if the index is not defined, and
// with ErrNotAnchor if the index at AnchorIndex is not the locked anchor
// (its contents are then never read).
func ReadAnchor(t transport.TPM) ([]byte, error) {
	s, name, err := readAnchorState(t)
	switch {
	case err != nil:
		return nil, err
	case s == anchorAbsent:
		return nil, fmt.Errorf("%w (%#x)", ErrNoAnchor, uint32(AnchorIndex))
	case s != anchorLocked:
		return nil, ErrNotAnchor
	}
	return readAnchor(t, name)
}

func readAnchor(t transport.TPM, name tpm2.TPM2BName) ([]byte, error) {
	index := tpm2.NamedHandle{Handle: AnchorIndex, Name: name}
	rsp, err := tpm2.NVRead{
		AuthHandle: tpm2.AuthHandle{Handle: AnchorIndex, Name: name, Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    index,
		Size:       AnchorSize,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("reading the ledger key anchor: %w", err)
	}
	if len(rsp.Data.Buffer) != AnchorSize {
		return nil, fmt.Errorf("the ledger key anchor returned %d bytes", len(rsp.Data.Buffer))
	}
	return rsp.Data.Buffer, nil
}

// CheckAnchor reads the anchor and compares it, in constant time, with
// digest. A different digest fails with ErrAnchorTaken.
func CheckAnchor(t transport.TPM, digest []byte) error {
	got, err := ReadAnchor(t)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, digest) != 1 {
		return ErrAnchorTaken
	}
	return nil
}

// Anchor makes the TPM anchor digest for good: it defines the index, writes
// digest and write-locks it, with the platform hierarchy's (empty)
// authorization. It resumes wherever an interrupted Anchor stopped: a
// defined index is written, a written but unlocked one is written again
// (an unlocked anchor binds nothing: readers accept only a locked one) and
// locked. A locked anchor is never written: if it holds digest, Anchor
// succeeds without writing; if it holds another, it fails with
// ErrAnchorTaken. One NV write per TPM life.
func Anchor(t transport.TPM, digest []byte) error {
	if len(digest) != AnchorSize {
		return fmt.Errorf("an anchor is %d bytes, not %d", AnchorSize, len(digest))
	}
	s, name, err := readAnchorState(t)
	if err != nil {
		return err
	}
	switch s {
	case anchorForeign:
		return fmt.Errorf("%w: remove that index with the owner hierarchy, or use a TPM without it", ErrNotAnchor)
	case anchorLocked:
		return CheckAnchor(t, digest)
	case anchorAbsent:
		if err := defineAnchor(t); err != nil {
			return err
		}
		if name, err = anchorName(anchorDefined); err != nil {
			return err
		}
	}
	if err := writeAnchor(t, name, digest); err != nil {
		return err
	}
	if err := lockAnchor(t); err != nil {
		return err
	}
	return CheckAnchor(t, digest)
}

// phEnableNV is TPMA_STARTUP_CLEAR's bit for the platform hierarchy's NV.
const phEnableNV = 1 << 3

// checkPlatformNV fails with ErrPlatformNVDisabled if platform-created NV
// indices are hidden. It runs only when the anchor reads as absent.
func checkPlatformNV(t transport.TPM) error {
	rsp, err := tpm2.GetCapability{
		Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTStartupClear), PropertyCount: 1,
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("reading the TPM's hierarchy state: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return err
	}
	for _, p := range props.TPMProperty {
		if p.Property == tpm2.TPMPTStartupClear {
			if p.Value&phEnableNV == 0 {
				return ErrPlatformNVDisabled
			}
			return nil
		}
	}
	return errors.New("the TPM did not report its hierarchy state (TPM_PT_STARTUP_CLEAR)")
}

func platformAuth() tpm2.AuthHandle {
	return tpm2.AuthHandle{Handle: tpm2.TPMRHPlatform, Auth: tpm2.PasswordAuth(nil)}
}

func defineAnchor(t transport.TPM) error {
	_, err := tpm2.NVDefineSpace{AuthHandle: platformAuth(), PublicInfo: tpm2.New2B(anchorTemplate)}.Execute(t)
	if err != nil {
		return fmt.Errorf("defining the ledger key anchor %#x with the platform hierarchy (its authorization must be empty): %w",
			uint32(AnchorIndex), err)
	}
	return nil
}

func writeAnchor(t transport.TPM, name tpm2.TPM2BName, digest []byte) error {
	_, err := tpm2.NVWrite{
		AuthHandle: platformAuth(),
		NVIndex:    tpm2.NamedHandle{Handle: AnchorIndex, Name: name},
		Data:       tpm2.TPM2BMaxNVBuffer{Buffer: digest},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("writing the ledger key anchor: %w", err)
	}
	return nil
}

func lockAnchor(t transport.TPM) error {
	name, err := anchorName(anchorWritten)
	if err != nil {
		return err
	}
	_, err = tpm2.NVWriteLock{
		AuthHandle: platformAuth(),
		NVIndex:    tpm2.NamedHandle{Handle: AnchorIndex, Name: name},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("write-locking the ledger key anchor: %w", err)
	}
	return nil
}
