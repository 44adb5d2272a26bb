package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// FloorIndex is the NV index of the device's security version floor, in
// the owner range beside the release counter.
const FloorIndex tpm2.TPMHandle = 0x01800C58

// MaxSecurityVersion caps an image's security version. The floor rises
// one NV increment at a time, so a version is a small integer that grows
// by one per release that fixes a flaw, not a date or a build number.
const MaxSecurityVersion = 1 << 16

// The floor is an NV counter ([Counter], same template) whose value is
// the lowest security version whose secrets may open: every sealed blob,
// scoped key and approval carries its image's version v and a
// TPM2_PolicyNV(FloorIndex, v, UNSIGNED_LE) term, so the TPM itself
// refuses them once the floor is above v.
//
// Why a counter: it can only be incremented, never written or lowered. A
// counter that is deleted (TPM2_NV_UndefineSpace, or TPM2_Clear) and
// defined again starts, at its first increment, above the largest value
// any deleted counter of that TPM ever held (TPM 2.0 Part 1, "NV
// Counters"; libtpms keeps that maximum across deletions). So whoever
// deletes and re-creates the floor gets it back at least as high as it
// was — which locks everything rather than opening an older image.
//
// The policy names the index by its Name, which covers its attributes
// and authorization policy: an index of another kind at the same handle
// (an ordinary NV area that could be written back to 1) has another Name,
// so the policy does not match it.
var floorCounter = Counter{Index: FloorIndex}

// ErrNoFloor means the TPM has no security version floor: the device was
// not enrolled on this TPM, or its owner hierarchy was cleared.
var ErrNoFloor = errors.New("the TPM has no security version floor (custodian enroll defines it)")

// ErrDowngrade is matched by every [DowngradeError].
var ErrDowngrade = errors.New("downgrade refused")

// DowngradeError says that a secret's image is older than the device's
// floor allows.
type DowngradeError struct {
	Version uint64 // the security version the secret was sealed for
	Floor   uint64 // the device's floor
}

func (e *DowngradeError) Error() string {
	return fmt.Sprintf("this image's security version %d is below the device's floor %d: boot an image of version >= %d",
		e.Version, e.Floor, e.Floor)
}

// Is makes errors.Is(err, ErrDowngrade) true.
func (e *DowngradeError) Is(target error) bool { return target == ErrDowngrade }

// CheckSecurityVersion refuses a version outside 1..MaxSecurityVersion.
func CheckSecurityVersion(v uint64) error {
	if v < 1 || v > MaxSecurityVersion {
		return fmt.Errorf("security version %d is out of range (1 to %d)", v, MaxSecurityVersion)
	}
	return nil
}

// DefineFloor makes sure the TPM has the floor and returns its value. A
// missing floor is defined and incremented once (a counter is unreadable
// before its first increment): on a TPM that never deleted a counter it
// starts at 1. Enrollment calls it before the ledger's counter exists.
func DefineFloor(t transport.TPM) (uint64, error) {
	v, err := ReadFloor(t)
	if !errors.Is(err, ErrNoFloor) {
		return v, err
	}
	return floorCounter.Create(t)
}

// ReadFloor returns the floor, after checking that the index at
// FloorIndex is the floor counter (its Name, computed from the template).
func ReadFloor(t transport.TPM) (uint64, error) {
	v, err := floorCounter.Read(t)
	if errors.Is(err, ErrNoCounter) {
		return 0, ErrNoFloor
	}
	return v, err
}

// RaiseFloor increments the floor until it is at least to, and returns
// the new value. It never lowers the floor: a target at or below the
// current value changes nothing. The caller decides whether the device
// may go that high (package appliance checks that everything it holds
// opens at the new floor).
func RaiseFloor(t transport.TPM, to uint64) (uint64, error) {
	if err := CheckSecurityVersion(to); err != nil {
		return 0, err
	}
	v, err := ReadFloor(t)
	for err == nil && v < to {
		v, err = floorCounter.Increment(t)
	}
	return v, err
}

// floorName is the Name of the floor index after its first increment,
// computed from the template (once: Counter.name), never read from the
// TPM.
func floorName() tpm2.TPM2BName {
	name, err := floorCounter.name(true)
	if err != nil {
		panic("tpm: naming the floor template: " + err.Error())
	}
	return name
}

// policyFloor is the policy term that admits a secret of version v only
// while the floor is at most v.
func policyFloor(v uint64) tpm2.PolicyNV {
	operand := binary.BigEndian.AppendUint64(nil, v)
	return tpm2.PolicyNV{
		AuthHandle: tpm2.AuthHandle{Handle: FloorIndex, Name: floorName(), Auth: tpm2.PasswordAuth(nil)},
		NVIndex:    tpm2.NamedHandle{Handle: FloorIndex, Name: floorName()},
		OperandB:   tpm2.TPM2BOperand{Buffer: operand},
		Offset:     0,
		Operation:  tpm2.TPMEOUnsignedLE,
	}
}

// checkFloor runs the floor term in sess. A refusal becomes a
// DowngradeError naming both versions.
func checkFloor(t transport.TPM, sess tpm2.Session, v uint64) error {
	cmd := policyFloor(v)
	cmd.PolicySession = sess.Handle()
	_, err := cmd.Execute(t)
	if err == nil {
		return nil
	}
	floor, readErr := ReadFloor(t)
	switch {
	case errors.Is(readErr, ErrNoFloor):
		return ErrNoFloor
	case readErr != nil:
		return fmt.Errorf("checking the security version floor: %w (%v)", err, readErr)
	case errors.Is(err, tpm2.TPMRCPolicy) && floor > v:
		return &DowngradeError{Version: v, Floor: floor}
	}
	return fmt.Errorf("checking the security version floor: %w", err)
}

// ImagePolicyDigest is the policy digest of an image's gate: PolicyPCR
// over pcrs, then the floor term for version. Sealed blobs use it as
// their whole policy; approvals sign it.
func ImagePolicyDigest(pcrs PCRValues, version uint64) ([]byte, error) {
	if err := pcrs.Check(); err != nil {
		return nil, err
	}
	if err := CheckSecurityVersion(version); err != nil {
		return nil, err
	}
	var buf [8 + (maxPCR+1)*(1+sha256.Size)]byte
	key := appendPolicyKey(buf[:0], pcrs, version)
	if digest, ok := lastPolicy.get(key); ok {
		return digest, nil
	}
	calc, err := tpm2.NewPolicyCalculator(tpm2.TPMAlgSHA256)
	if err != nil {
		return nil, err
	}
	if err := imageSteps(calc, pcrs, version); err != nil {
		return nil, err
	}
	lastPolicy.set(string(key), calc.Hash().Digest)
	return calc.Hash().Digest, nil
}

// lastPolicy is the last image policy digest computed: a ceremony seals
// every custodian's share under the same PCRs and version, and go-tpm
// computes a policy through its reflection marshaller.
var lastPolicy policyMemo

type policyMemo struct {
	mu     sync.Mutex
	key    string
	digest []byte
}

func (m *policyMemo) get(key []byte) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.digest == nil || m.key != string(key) {
		return nil, false
	}
	return bytes.Clone(m.digest), true
}

func (m *policyMemo) set(key string, digest []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.key, m.digest = key, bytes.Clone(digest)
}

// appendPolicyKey appends every input of an image policy: the version,
// then each selected PCR's index and value in index order (values are
// SHA-256 sized, checked). ImagePolicyDigest appends to an array of its
// own, which holds the key of any usable policy.
func appendPolicyKey(b []byte, pcrs PCRValues, version uint64) []byte {
	b = binary.BigEndian.AppendUint64(b, version)
	var indices [maxPCR + 1]int
	for _, i := range pcrs.appendIndices(indices[:0]) {
		b = append(b, byte(i))
		b = append(b, pcrs[i]...)
	}
	return b
}

func imageSteps(calc *tpm2.PolicyCalculator, pcrs PCRValues, version uint64) error {
	for _, step := range []tpm2.PolicyCommand{
		tpm2.PolicyPCR{PcrDigest: tpm2.TPM2BDigest{Buffer: pcrs.digest()}, Pcrs: pcrs.selection()},
		policyFloor(version),
	} {
		if err := step.Update(calc); err != nil {
			return err
		}
	}
	return nil
}

// passImage satisfies an image gate in sess: PolicyPCR, then the floor.
func passImage(t transport.TPM, sess tpm2.Session, pcrs PCRValues, version uint64) error {
	if err := policyPCR(t, sess, pcrs); err != nil {
		return err
	}
	return checkFloor(t, sess, version)
}
